"""Optional MLflow tracking: ``--mlflow [URI]`` on ``trainer.train``, ``trainer.tune`` and ``trainer.rolling``.

Where runs go (``resolve_store``): ``--mlflow`` alone is a local store in the command's own directory (the run's,
the sweep's or the registry's): a SQLite file ``mlflow.db`` with the artifacts beside it in ``mlartifacts/``, no
server; ``--mlflow http://HOST:PORT`` is that tracking server (its artifact store is the server's);
``--mlflow sqlite:///PATH`` a SQLite store at PATH (artifacts beside it, as for the local one).

MLflow is an optional extra: ``require_mlflow`` refuses ``--mlflow`` without it in one line, and nothing here
imports it at module level, so a command without ``--mlflow`` never imports MLflow. ``check_store`` reaches a
server once, before the command does any work. ``RunTracker`` is one MLflow run (a training run, a sweep, a
rolling round): parameters, the metric registry's figures per iteration, files as artifacts. A store that fails
once the work has started stops the tracking, never the work: one warning line, and the run's own files are
complete as without ``--mlflow``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from trainer.metrics import registry as M
from trainer.metrics.metric import VALIDATION
from trainer.runtime.errors import ExperimentError

FLAG = "--mlflow"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
INSTALL_HINT = 'pip install -e ".[mlflow]"'
SQLITE_PREFIX = "sqlite:///"
# how long a server check waits, and that it does not retry: MLflow's client retries for minutes by default
_CHECK_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
_MLFLOW_LOGGERS = ("mlflow", "alembic")
_BATCH = 100  # MLflow's limit of parameters per request (metrics: 1000)


class TrackingError(ExperimentError):
    """``--mlflow`` cannot be honoured (the extra missing, a bad URI, a server that does not answer)."""


def add_argument(parser: argparse.ArgumentParser, where: str) -> None:
    """The ``--mlflow [URI]`` option; ``where`` names the directory of its local store (``the run directory``)."""
    parser.add_argument(
        FLAG,
        nargs="?",
        const="",
        default=None,
        metavar="URI",
        help=f"track in MLflow: alone, a local store in {where} ({STORE_FILE}, artifacts in {ARTIFACTS_DIR}/); "
        f"with http(s)://HOST:PORT that tracking server (needs the mlflow extra: {INSTALL_HINT})",
    )


def require_mlflow() -> None:
    """Import MLflow once, or refuse ``--mlflow`` with the install command.

    Raises:
        TrackingError: MLflow is not installed.
    """
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError(f"{FLAG} needs MLflow, an optional extra; install it with: {INSTALL_HINT}") from None
    for name in _MLFLOW_LOGGERS:  # store migrations and notices stay off the terminal (warnings still show)
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class Store:
    """A tracking store: its URI, and where new experiments keep their artifacts (None: the server decides)."""

    uri: str
    artifacts: str | None

    @property
    def local_file(self) -> Path | None:
        """The SQLite file of a local store (None for a server)."""
        return Path(self.uri.removeprefix(SQLITE_PREFIX)) if self.uri.startswith(SQLITE_PREFIX) else None


def resolve_store(value: str, directory: Path) -> Store:
    """The store of ``--mlflow VALUE`` (``""``: the local store in ``directory``).

    Raises:
        TrackingError: not an http(s) or sqlite URI.
    """
    if not value:
        return _sqlite(Path(directory).absolute() / STORE_FILE)
    parsed = urlparse(value)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return Store(value.rstrip("/"), None)
    if value.startswith(SQLITE_PREFIX) and len(value) > len(SQLITE_PREFIX):
        return _sqlite(Path(value.removeprefix(SQLITE_PREFIX)).absolute())
    raise TrackingError(
        f"{FLAG} {value}: not a tracking URI; give an MLflow server as http://HOST:PORT, a SQLite store as "
        f"{SQLITE_PREFIX}PATH, or {FLAG} alone for a local store in {directory}"
    )


def _sqlite(path: Path) -> Store:
    return Store(f"{SQLITE_PREFIX}{path}", (path.parent / ARTIFACTS_DIR).as_uri())


def open_store(value: str | None, directory: Path) -> Store | None:
    """``--mlflow``'s store, checked before any work (None without ``--mlflow``): MLflow installed, the URI valid,
    a server answering, a SQLite file's folder writable. Nothing is written here.

    Raises:
        TrackingError: one line naming what is wrong and the fix.
    """
    if value is None:
        return None
    require_mlflow()
    store = resolve_store(value, directory)
    path = store.local_file
    if path is not None:
        if value:  # the local default lives in a directory the command checks and creates itself
            from trainer.runtime.paths import check_output_dir

            check_output_dir(path.parent, FLAG)
        return store
    from mlflow.tracking import MlflowClient

    try:
        with _env(_CHECK_ENV):
            MlflowClient(store.uri).search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, requests' errors: what the client says, in one line
        raise TrackingError(
            f"{FLAG} {value}: no MLflow tracking server answers there ({short_reason(exc)}); start one (mlflow "
            f"server --host 127.0.0.1 --port PORT) or give {FLAG} alone for a local store in {directory}"
        ) from None
    return store


@contextlib.contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def short_reason(exc: BaseException) -> str:
    """An MLflow or HTTP error as a few words: the OS's reason when there is one, else its first line."""
    text = str(exc)
    found = _ERRNO.findall(text)
    if found:
        return found[-1].strip()
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first if len(first) <= 200 else first[:197] + "..."


# --- what is logged -------------------------------------------------------------------------------------------
def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow parameters: dotted keys (``sac.actor_lr``), values as text (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def iteration_metrics(section: Mapping[str, Any]) -> dict[str, float]:
    """The metric registry's figures in one iteration's ``portfolio`` result section, by their Tune keys
    (``portfolio/validation/sharpe``, as a sweep names them). Validation figures only when this iteration ran a
    validation pass (between passes the section repeats the last one)."""
    validated = bool(section.get(M.VALIDATED))
    out = {}
    for metric in M.REGISTRY:
        if metric.section_path[:1] == (VALIDATION,) and not validated:
            continue
        value = metric.read(dict(section))
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[metric.tune_key] = float(value)
    return out


def numeric_figures(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a flat row (a report's figures) as metrics, keys prefixed with ``prefix``."""
    return {
        f"{prefix}{k}": float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def experiment_id(client: Any, store: Store, name: str) -> str:
    """The MLflow experiment ``name`` in ``store``, created when missing (a local store's artifacts beside it)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name, artifact_location=store.artifacts))


class Guard:
    """Runs calls on a tracking store until one fails; then every call is a no-op and one warning line on stderr
    says so: tracking never stops the work it records."""

    def __init__(self, uri: str) -> None:
        self.uri, self.failed = uri, False

    def __call__(self, call: Callable[[], object]) -> None:
        if self.failed:
            return
        try:
            call()
        except Exception as exc:  # a store gone away mid-run: the work goes on without tracking
            self.failed = True
            print(
                f"warning: MLflow tracking stopped ({self.uri}: {short_reason(exc)}); the work goes on and its own "
                "files are complete",
                file=sys.stderr,
                flush=True,
            )


def log_figures(client: Any, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Metrics of one step in one request."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, v, now, step) for k, v in metrics.items()]
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, metrics=items[i : i + _BATCH])


def log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    """Parameters in as few requests as MLflow allows."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[i : i + _BATCH])


class RunTracker:
    """One MLflow run (a training run, a sweep, a round's model); a failing store stops the tracking (``Guard``)."""

    def __init__(self, store: Store, experiment: str, run_name: str, tags: Mapping[str, str] | None = None) -> None:
        self.store, self.experiment, self.run_name, self.tags = store, experiment, run_name, dict(tags or {})
        self.client: Any = None
        self.run_id: str | None = None
        self.guard = Guard(store.uri)

    def start(self, params: Mapping[str, str]) -> None:
        """Create the run (its experiment when missing) and log its parameters."""

        def go() -> None:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(self.store.uri)
            eid = experiment_id(self.client, self.store, self.experiment)
            self.run_id = self.client.create_run(eid, run_name=self.run_name, tags=self.tags).info.run_id
            log_params(self.client, self.run_id, params)

        self.guard(go)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self.run_id is not None and metrics:
            self.guard(lambda: log_figures(self.client, str(self.run_id), metrics, step))

    def log_files(self, paths: Iterable[Path], folder: str | None = None) -> None:
        """Log files and directories (those that exist) as artifacts, under ``folder`` when given."""

        def go() -> None:
            for path in paths:
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), _join(folder, path.name))
                elif path.is_file():
                    self.client.log_artifact(self.run_id, str(path), folder)

        if self.run_id is not None:
            self.guard(go)

    def finish(self, status: str) -> None:
        """End the run: ``FINISHED``, ``FAILED`` or ``KILLED`` (MLflow's run statuses)."""
        if self.run_id is not None:
            self.guard(lambda: self.client.set_terminated(self.run_id, status))


def _join(folder: str | None, name: str) -> str:
    return f"{folder}/{name}" if folder else name


FINAL_PREFIX = "final/"  # the figures of a run's final report (its last validation pass, a sweep's backtests)
RUN_DIR_TAG = "run_dir"


class TrainingTracker(RunTracker):
    """A ``trainer.train`` run: the experiment's settings, each iteration's registry figures (step: the iteration),
    then the final validation pass, the run's files and its status."""

    @classmethod
    def of(cls, store: Store | None, experiment: str, out_dir: Path) -> TrainingTracker | None:
        return None if store is None else cls(store, experiment, out_dir.name, {RUN_DIR_TAG: str(out_dir)})

    def iteration(self, step: int, section: Mapping[str, Any]) -> None:
        self.log_metrics(iteration_metrics(section), step)

    def end(self, summary: Mapping[str, Any] | None, files: Iterable[Path]) -> None:
        """``summary``: the run's ``summary.json`` (None: the run failed before writing it)."""
        if summary is None:
            self.finish("FAILED")
            return
        final = numeric_figures(summary.get("validation") or {}, f"{FINAL_PREFIX}{VALIDATION}/")
        self.log_metrics(final, int(summary.get("iterations") or 0))
        self.log_files(files)
        self.finish(RUN_STATUS.get(str(summary.get("status")), "FAILED"))


# MLflow's run status for each outcome of ours (trainer.train's summary status, a sweep's outcome)
RUN_STATUS = {
    M.STATUS_COMPLETED: "FINISHED",
    M.STATUS_DIVERGED: "FAILED",
    M.STATUS_INTERRUPTED: "KILLED",
    M.STATUS_ERROR: "FAILED",
}
