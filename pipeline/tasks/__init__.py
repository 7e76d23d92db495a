"""Analysis tasks: the seam (:mod:`pipeline.tasks.base`), one package per task for its
whole life (job spec, replica, models, training, evaluation, demo data), and the registry
that names them (:mod:`pipeline.tasks.registry`)."""
