"""Everything Ray: experiment schema and SACConfig builder, training, sweeps, backtests."""

import os

# One thread per process unless the user says otherwise: on a 2-core machine torch's default thread pool
# in the learner process makes small SAC updates ~9x slower (../shared/docs/rllib-2.60-notes.md §0.11).
# Must happen before torch is imported; Ray sets the same for its actors.
os.environ.setdefault("OMP_NUM_THREADS", "1")
