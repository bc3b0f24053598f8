"""Everything that plugs into RLlib: the algorithm, learner (and compiled step), SAC losses, replay buffer,
observation filter connector, networks, optimiser, population module and the one SACConfig builder.

A new network goes into ``catalog`` (or ``population`` for its batched twin). Imports ``envs``, the
experiment, evaluation (validation passes), ``trainer.metrics`` and ``trainer.runtime``.
"""
