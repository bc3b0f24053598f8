"""A quiet terminal: our progress table and results on the terminal, library chatter in a log file.

RLlib and Ray log deprecation notices, "new API stack" notes and install hints (gputil, ...) that a user of
this tool cannot act on. ``quiet_logging`` sends every ``ray`` logger record and Python warning of the
driver process to a log file instead of the terminal (errors still reach the terminal); the Ray workers'
output is not forwarded to the driver unless ``verbose`` (``ray.init(log_to_driver=...)``), it stays in
Ray's session logs. ``--verbose`` on the command line shows everything as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import warnings
from pathlib import Path

_LIBRARY_LOGGERS = ("ray", "ray.rllib", "ray.tune", "ray.train", "ray.data", "ray.serve", "py.warnings")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_logging(log_file: Path | None, verbose: bool = False) -> None:
    """Route library log records and warnings to ``log_file`` (terminal gets errors only), unless verbose."""
    if verbose:
        return
    # RLlib adds a terminal handler to its logger when it is first imported (ray/rllib/__init__.py): import it
    # now (about 0.1 s), so that the handlers set below stay the last word whenever a command imports RLlib.
    if importlib.util.find_spec("ray.rllib") is not None:
        importlib.import_module("ray.rllib")
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file)
        to_file.setFormatter(logging.Formatter(_FORMAT))
        handlers.append(to_file)
    to_terminal = logging.StreamHandler()
    to_terminal.setLevel(logging.ERROR)
    to_terminal.setFormatter(logging.Formatter(_FORMAT))
    handlers.append(to_terminal)
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
