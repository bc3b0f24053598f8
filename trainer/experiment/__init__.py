"""The experiment: the closed schema of an experiment file, loading YAML and ``--set``, stored experiments.

A new experiment key goes into ``config`` (or ``data_config`` for the data section); the search-space
vocabulary and validation live beside it. Imports ``envs``, ``trainer.metrics`` and ``trainer.runtime`` only.
"""
