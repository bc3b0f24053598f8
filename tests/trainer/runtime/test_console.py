"""trainer.runtime.console: library chatter stays off the terminal whenever RLlib is first imported."""

from __future__ import annotations

import subprocess
import sys


def test_rllib_imported_after_quiet_logging_stays_quiet_and_errors_still_show():
    # RLlib adds a terminal handler to its logger on first import; a command that imports RLlib only later
    # (a backtest reads no RLlib at all, trainer.tune builds its config after setting up logging) must not
    # get it back
    code = (
        "import logging, sys; from trainer.runtime.console import quiet_logging; "
        "assert 'ray.rllib' not in sys.modules; quiet_logging(None); "
        "from ray.rllib.algorithms.sac import SACConfig; "
        "logging.getLogger('ray.rllib.algorithms.sac').warning('library chatter'); "
        "logging.getLogger('ray.rllib').error('a real error')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "library chatter" not in res.stdout + res.stderr
    assert "ERROR ray.rllib: a real error" in res.stderr
