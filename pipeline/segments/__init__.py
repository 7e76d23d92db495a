"""Videos cut into segments before a task analyses them: shot boundaries
(:mod:`~pipeline.segments.detectors`), the shots found per video and fitted to a task's
length limits (:mod:`~pipeline.segments.shots`), one row per shot."""
