"""The output: rows and their schema (built in replicas), and the store the driver keeps
(the output directory, its if_exists policy, resume, the job record, the counts)."""
