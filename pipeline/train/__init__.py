"""``vidbatch train``, the same for every task: plan (the task's training parts, found
through the registry), decode once, fit a Ray Train ``TorchTrainer``, publish the best
checkpoint, summarise. What tasks share below them is :mod:`pipeline.fit`."""
