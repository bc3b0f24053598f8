"""The error every part raises for input the user can fix: its message names the file, key or value and the fix.

Defined here, below every other part of ``trainer``, so that run-time plumbing (Ray start-up, resources) and
the experiment schema raise the same error and each command catches one type.
"""


class ExperimentError(ValueError):
    """A bad experiment file, override or request; the message names the file and the key."""
