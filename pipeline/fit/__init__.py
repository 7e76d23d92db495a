"""What every task's training uses, below the tasks: the spec sections they share
(spec.py), the plan and labelled splits (plan.py), the per-worker epoch machinery
(epochs.py, classifier.py), the metrics (metrics.py) and the training seam (training.py).
"""
