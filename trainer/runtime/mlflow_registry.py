"""The rolling registry mirrored in MLflow's model registry (``python -m trainer.rolling --mlflow [URI]``).

The directory registry (``trainer.runtime.registry``) stays the record and needs nothing of this. With
``--mlflow``, each round's training runs are tracked like ``trainer.train --mlflow`` runs (in the same store: by
default ``<registry>/mlflow.db``), and each decided round's candidate becomes a version of the registered model
named after the registry directory (``registry/sp500``: ``sp500``):

- the version's files are the candidate's checkpoint directory, logged as artifacts (``model/``) of a run named
  ``round <ID>``: plain files with their manifest, no pickled Python model; ``trainer.backtest`` and
  ``trainer.decide`` read a downloaded copy's policy files without running any of its code;
- its tags are the round's decision (``round``, ``date``, ``promoted``, ``reason``, ``seed``, ``agent``,
  ``checkpoint``) and figures (``figures.sharpe_minus_ew``, ``figures.candidate.sharpe``, ...);
- the alias ``live`` names the version of the live round (``live.json``): moved on a promotion and on
  ``--rollback``; a live round that has no version yet (decided before ``--mlflow`` was used) gets one then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.runtime import registry as R
from trainer.runtime.tracking import FLAG, Guard, RunTracker, Store, flatten

LIVE_ALIAS = "live"
ROUND_TAG = "round"
MODEL_ARTIFACT = "model"
RECORD_TAGS = ("date", "status", "promoted", "reason", "seed", "agent", "checkpoint")
FIGURES = "figures"


def model_name(registry: Path) -> str:
    """The registered model of a registry: its directory's name."""
    return registry.name


def child_args(store: Store | None) -> list[str]:
    """What a round's ``trainer.train`` runs add to their command line: the same store."""
    return [] if store is None else [FLAG, store.uri]


def round_tags(round_id: str, record: dict[str, Any]) -> dict[str, str]:
    """A round's decision and figures as the tags of its model version (text, figures flattened)."""
    tags = {ROUND_TAG: round_id}
    tags.update({k: v for k, v in flatten({k: record.get(k) for k in RECORD_TAGS}).items()})
    tags.update(flatten(record.get(FIGURES) or {}, f"{FIGURES}."))
    return tags


def _version_of(client: Any, name: str, round_id: str) -> Any:
    """The model version registered for ``round_id`` (None: none yet)."""
    found = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get(ROUND_TAG) == round_id]
    return max(found, key=lambda v: int(v.version)) if found else None


def _register(store: Store, client: Any, registry: Path, round_id: str, record: dict[str, Any]) -> Any:
    """The round's candidate as a new model version: its checkpoint logged as a run's artifacts."""
    from mlflow.exceptions import MlflowException

    name = model_name(registry)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"trainer.rolling registry {registry}")
    tags = round_tags(round_id, record)
    run = RunTracker(store, str(record.get("experiment") or name), f"round {round_id}", tags)
    run.start({})
    run.log_files([registry / str(record["checkpoint"])], MODEL_ARTIFACT)
    run.finish("FINISHED")
    if run.guard.failed or run.run_id is None:
        raise RuntimeError("the round's model could not be logged")
    checkpoint_name = Path(str(record["checkpoint"])).name
    source = f"{client.get_run(run.run_id).info.artifact_uri}/{MODEL_ARTIFACT}/{checkpoint_name}"
    return client.create_model_version(name, source, run_id=run.run_id, tags=tags)


def _sync(store: Store, registry: Path, round_id: str | None) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.uri)
    name = model_name(registry)
    if round_id is not None:
        record = R.read_round(registry, round_id)
        if record.get("status") == R.STATUS_DECIDED and record.get("checkpoint"):
            version = _version_of(client, name, round_id) or _register(store, client, registry, round_id, record)
            print(f"MLflow: round {round_id} is version {version.version} of model {name} ({store.uri})")
    live = R.live_record(registry)
    if live is None:
        return
    live_round = str(live["round"])
    version = _version_of(client, name, live_round)
    if version is None:
        version = _register(store, client, registry, live_round, R.read_round(registry, live_round))
    client.set_registered_model_alias(name, LIVE_ALIAS, version.version)
    print(f"MLflow: alias {LIVE_ALIAS} of model {name} is version {version.version} (round {live_round})")


def record_round(store: Store | None, registry: Path, round_id: str | None) -> None:
    """Mirror the registry in MLflow after a round (``round_id``) or a rollback (None): the round's candidate
    registered with its decision, the alias ``live`` on the live round's version. A store that fails prints one
    warning; the directory registry is complete without it."""
    if store is not None:
        Guard(store.uri)(lambda: _sync(store, registry, round_id))
