"""Watching runs live: Ray gauges that identify their run, dashboard access, the Grafana dashboard.

- ``MetricsExporter`` sets one Ray gauge per entry of ``GAUGES`` after every training iteration, tagged
  with ``TAG_KEYS`` (experiment, trial, seed, fold), so every trial of a sweep is its own time series in
  Prometheus and Grafana (Ray adds the prefix ``ray_`` to application metrics).
- ``dashboard_access_message`` says where the Ray dashboard is and how to get past its token login.
- ``install_grafana_dashboard`` copies ``monitoring/grafana/portfolio.json`` next to the dashboards Ray
  generates for Grafana on the head node, so Ray's Grafana provisioning serves it too.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.metrics import registry as M

# Ray gauges, from the metric registry (trainer.metrics.registry, metrics shown in GAUGE):
# name -> (path of the value inside the result's portfolio section, description).
GAUGES: dict[str, tuple[tuple[str, ...], str]] = {
    m.gauge_name: (m.section_path, m.description) for m in M.shown_in(M.GAUGE)
}
PROMETHEUS_PREFIX = "ray_"  # Ray's prefix for application metrics in its Prometheus output
TAG_KEYS = ("experiment", "trial", "seed", "fold")
NO_VALUE_TAG = "none"  # tag value of a seed or fold the run does not have

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DASHBOARD_FILE = REPO_ROOT / "monitoring" / "grafana" / "portfolio.json"
PROMETHEUS_CONFIG_FILE = REPO_ROOT / "monitoring" / "prometheus.yml"
# Ray's dashboard writes its Grafana dashboards to <session>/metrics/grafana/dashboards unless this
# variable names another folder (ray/dashboard/modules/metrics/metrics_head.py).
RAY_GRAFANA_DASHBOARD_DIR_ENV = "RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR"
DEFAULT_TOKEN_FILE = "~/.ray/auth_token"  # where `ray get-auth-token --generate` and ray.init keep the token


def prometheus_name(gauge: str) -> str:
    """The name a gauge of ``GAUGES`` has in Prometheus."""
    return PROMETHEUS_PREFIX + gauge


def run_tags(experiment: str, trial: str, seed: int | None, fold: Any | None) -> dict[str, str]:
    """The tags every gauge of one run carries.

    Args:
        experiment: the experiment's name (``tune_configs/<name>.yaml``).
        trial: the Tune trial id, or the run directory's name for ``trainer.train``.
        seed: the run's seed; ``None`` is tagged ``"none"``.
        fold: the walk-forward fold of the run's data; ``None`` (no folds) is tagged ``"none"``.

    Returns:
        A mapping of ``TAG_KEYS`` to strings (Ray tag values must be strings).
    """
    return {
        "experiment": str(experiment),
        "trial": str(trial),
        "seed": NO_VALUE_TAG if seed is None else str(seed),
        "fold": NO_VALUE_TAG if fold is None else str(fold),
    }


def _value_at(section: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = section
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


class MetricsExporter:
    """Exports the portfolio section of each training result as Ray gauges tagged with one run's tags.

    Each run (trial) has its own exporter; several runs in one process (Tune actors are separate
    processes, tests and ``trainer.train`` are not) keep separate series because their tags differ.
    """

    def __init__(self, tags: Mapping[str, str]) -> None:
        """Create the gauges (``GAUGES``) for one run.

        Args:
            tags: the run's tags, as made by ``run_tags``.

        Raises:
            ValueError: the tag keys are not exactly ``TAG_KEYS``.
        """
        if set(tags) != set(TAG_KEYS):
            raise ValueError(f"gauge tags must be exactly {list(TAG_KEYS)}, got {sorted(tags)}")
        from ray.util.metrics import Gauge

        self.tags = {k: str(tags[k]) for k in TAG_KEYS}
        self._gauges = {name: Gauge(name, description=desc, tag_keys=TAG_KEYS) for name, (_, desc) in GAUGES.items()}

    def export(self, section: Mapping[str, Any]) -> dict[str, float]:
        """Set every gauge whose value is present and finite in ``section``; return what was set."""
        exported = {}
        for name, (path, _) in GAUGES.items():
            value = _value_at(section, path)
            if value is None or not math.isfinite(float(value)):
                continue  # no value yet (e.g. before learning starts): keep the series' last value
            self._gauges[name].set(float(value), tags=self.tags)
            exported[name] = float(value)
        return exported


# --- dashboard access --------------------------------------------------------------------------------
def token_auth_enabled() -> bool:
    """Whether the connected Ray cluster requires its authentication token (call after ``ray.init``)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:  # a Ray without token authentication
        return False
    return bool(is_token_auth_enabled())


def token_location(environ: Mapping[str, str] | None = None) -> str:
    """Where this process' Ray reads the token from (the same order as Ray: variable, file variable, file)."""
    env = os.environ if environ is None else environ
    if env.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    return env.get("RAY_AUTH_TOKEN_PATH") or DEFAULT_TOKEN_FILE


def dashboard_access_message(
    url: str | None,
    *,
    joined: bool,
    token_auth: bool | None = None,
    grafana_dashboard: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Where the Ray dashboard is and how to open it, as printed when a sweep starts.

    Args:
        url: the dashboard's ``host:port`` (``ray.init(...).dashboard_url``), or ``None`` if none runs.
        joined: whether this process joined an existing cluster (``--address``/``RAY_ADDRESS``).
        token_auth: whether the cluster requires its token; ``None`` asks Ray.
        grafana_dashboard: where ``install_grafana_dashboard`` put our Grafana dashboard, if it did.
        environ: the environment to read the token's location from (default: this process').

    Returns:
        A few lines of text.
    """
    if not url:
        return "Ray dashboard: not running (start Ray with the dashboard to watch trials live)"
    address = url if "://" in url else f"http://{url}"
    lines = [f"Ray dashboard: {address}"]
    auth = token_auth_enabled() if token_auth is None else token_auth
    if auth:
        lines.append(
            "  token authentication is on: paste the output of `ray get-auth-token` into the dashboard's login "
            f"dialog (the token is read from {token_location(environ)})"
        )
    else:
        lines.append("  token authentication is off for this cluster (RAY_AUTH_MODE=disabled)")
    if joined:
        lines.append(
            "  on a cluster started with `ray up cluster.yaml` the dashboard listens on the head node only: "
            "run `ray dashboard cluster.yaml` on your machine and open http://localhost:8265"
        )
    if grafana_dashboard is not None:
        lines.append(
            f"  Grafana dashboard 'Portfolio RL' installed in {grafana_dashboard.parent} (Ray's Grafana "
            "provisioning); Prometheus config: monitoring/prometheus.yml"
        )
    return "\n".join(lines)


def ray_grafana_dashboard_dir(session_dir: str | Path | None = None) -> Path | None:
    """The folder Ray's generated Grafana provisioning loads dashboards from, if it exists on this node.

    Args:
        session_dir: the Ray session directory; ``None`` uses the connected session's.
    """
    override = os.environ.get(RAY_GRAFANA_DASHBOARD_DIR_ENV)
    if override:
        folder = Path(override)
    else:
        if session_dir is None:
            # No public API returns the session directory; this is where ray.init keeps the node.
            import ray._private.worker as ray_worker

            node = getattr(ray_worker, "_global_node", None)
            if node is None:
                return None
            session_dir = node.get_session_dir_path()
        folder = Path(session_dir) / "metrics" / "grafana" / "dashboards"
    # Only the head node's dashboard writes the provisioning; elsewhere there is nothing to add to.
    return folder if folder.is_dir() else None


def install_grafana_dashboard(session_dir: str | Path | None = None) -> Path | None:
    """Copy ``monitoring/grafana/portfolio.json`` where Ray's Grafana provisioning picks it up.

    Args:
        session_dir: the Ray session directory; ``None`` uses the connected session's.

    Returns:
        The installed file, or ``None`` when this node has no Grafana provisioning (no dashboard here, or
        not the head node) or the project's ``monitoring/`` folder is not next to the code.
    """
    folder = ray_grafana_dashboard_dir(session_dir)
    if folder is None or not GRAFANA_DASHBOARD_FILE.is_file():
        return None
    target = folder / GRAFANA_DASHBOARD_FILE.name
    try:
        shutil.copyfile(GRAFANA_DASHBOARD_FILE, target)
    except OSError:  # another user's session directory: monitoring must never stop a sweep
        return None
    return target
