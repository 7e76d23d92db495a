"""Models: the architecture table (no torch), the zoo and its weights, checkpoints, the
tensor layout shared by replicas and training, and how a replica runs its network."""
