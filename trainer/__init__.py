"""Everything Ray: experiment schema and SACConfig builder, training, sweeps, backtests."""

import os

# torch threads per process, unless the user set OMP_NUM_THREADS: on a 2-core machine torch's default thread
# pool in the learner process makes small SAC updates ~9x slower (docs/rllib-notes.md, threads). Set here,
# once, before torch is imported by anything of ours; build_sac_config passes the same to Ray's workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
OMP_NUM_THREADS = os.environ["OMP_NUM_THREADS"]
