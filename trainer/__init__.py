"""Everything Ray: the commands (``python -m trainer.train``, ``trainer.tune``, ``trainer.backtest``) at the top,
their parts in subpackages: ``experiment`` (the schema), ``rl`` (what plugs into RLlib), ``evaluation``
(policies, baselines, statistics, reports), ``metrics`` (the metric registry), ``runtime`` (checkpoints, run
directories, Ray start-up, threads, monitoring). docs/architecture.md gives the allowed import directions.
"""

# The process's thread settings, before anything of ours imports torch.
from trainer.runtime.threads import OMP_NUM_THREADS

__all__ = ["OMP_NUM_THREADS"]
