"""The detect task: one package for its whole life (see pipeline/tasks/base.py)."""
