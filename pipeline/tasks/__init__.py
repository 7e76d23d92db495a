"""Analysis tasks: the seam (:mod:`pipeline.tasks.base`), one module per task, and the
registry that names them (:mod:`pipeline.tasks.registry`)."""
