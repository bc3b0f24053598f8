"""The sweep's progress table on the terminal: Ray Tune's ``CLIReporter`` in the experiment's own words.

Tune names a swept value by its path in RLlib's config (``_model_config/fcnet_hiddens``) in the "current best
trial" line, and points at a driver-artifacts folder under ``/tmp/ray`` as the "Result logdir", which is not
where the results are. The table's columns already carry the experiment's keys; this reporter rewrites the best
trial's parameters the same way and names the sweep's own directory instead.
"""

from __future__ import annotations

from typing import Any

from ray.tune import CLIReporter

RESULT_LOGDIR = "Result logdir:"


class SweepReporter(CLIReporter):
    """``CLIReporter`` whose text names swept values by their experiment keys and results by the sweep's folder.

    Args:
        results_dir: where the sweep's trials and summary are written (shown instead of Tune's logdir).
        parameter_columns: ``{path in RLlib's config: experiment key}``, as for ``CLIReporter``.
        **kwargs: ``CLIReporter``'s other arguments.
    """

    def __init__(self, results_dir: str, parameter_columns: dict[str, str], **kwargs: Any) -> None:
        super().__init__(parameter_columns=parameter_columns, **kwargs)
        self._results_dir = results_dir
        self._names = dict(parameter_columns)

    def _progress_str(self, trials: list, done: bool, *sys_info: str, **kwargs: Any) -> str:
        text = super()._progress_str(trials, done, *sys_info, **kwargs)
        lines = [line for line in text.split("\n") if not line.startswith(RESULT_LOGDIR)]
        if lines and lines[0] == "== Status ==":
            lines.insert(1, f"Results: {self._results_dir}")
        text = "\n".join(lines)
        for path, key in self._names.items():
            text = text.replace(f"'{path}'", f"'{key}'")
        return text
