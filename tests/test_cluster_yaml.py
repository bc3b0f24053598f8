"""cluster.yaml: valid against Ray's own autoscaler schema; its node types can host every shipped experiment."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from trainer.experiment.loading import available_experiments, load_experiment
from trainer.tune import build_plan

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_validates_against_ray_schema():
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _cluster()
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    full = prepare_config(copy.deepcopy(cfg))
    full.setdefault("cluster_synced_files", [])
    validate_config(full)
    assert set(full["available_node_types"]) == {"head.cpu", "worker.rollout", "worker.learner"}
    # a typo is caught by the same schema (the test above is not vacuous)
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["worker.rollout"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="'min_worker' was unexpected"):
        jsonschema.validate(bad, schema)


def test_cluster_security_and_setup():
    cfg = _cluster()
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # no dashboard on a public interface
    assert any("pip install -e ." in c for c in cfg["setup_commands"])
    assert cfg["file_mounts"] == {"/home/ubuntu/portfolio-rl": "."}


def _fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0) >= v for k, v in bundle.items() if v)


@pytest.mark.parametrize("name", available_experiments())
def test_node_types_provide_what_each_experiment_requests(name):
    nodes = {n: t["resources"] for n, t in _cluster()["available_node_types"].items()}
    exp = load_experiment(name)
    plan = build_plan(exp)
    for bundle in plan["placement_bundles"]:
        hosts = [n for n, res in nodes.items() if _fits(bundle, res)]
        assert hosts, f"{name}: no node type can host bundle {bundle}"
    if name == "arch_sweep":
        # deliberate placement: env runners only on rollout workers, the learner only on GPU workers
        main, *runners = plan["placement_bundles"]
        assert [n for n, r in nodes.items() if _fits(main, r)] == ["worker.learner"]
        for b in runners:
            assert [n for n, r in nodes.items() if _fits(b, r)] == ["worker.rollout"]
