"""k8s/rayjob.yaml: valid against KubeRay's RayJob schema (unknown fields rejected), consistent with its
image and the Ray pin, its entrypoint a valid sweep, and its node groups able to host every experiment."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from trainer.experiment.loading import available_experiments, load_experiment
from trainer.tune import build_plan
from trainer.tune import main as tune_main

REPO = Path(__file__).resolve().parents[1]
RAYJOB = REPO / "k8s" / "rayjob.yaml"
DOCKERFILE = REPO / "k8s" / "Dockerfile"
SCHEMA = Path(__file__).resolve().parent / "data" / "kuberay" / "rayjob-v1-schema.json"


def _rayjob() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


def _strict(schema: object) -> object:
    """The schema with unknown fields rejected wherever Kubernetes would prune them (strict field validation)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_strict(json.loads(SCHEMA.read_text())))


def test_rayjob_validates_against_kuberays_schema():
    job = _rayjob()
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(job)]
    assert not errors, errors


def _cluster_spec(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]


def _groups(job: dict) -> list[dict]:
    return _cluster_spec(job)["workerGroupSpecs"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        # a misspelt field would be dropped silently by a lenient apply
        (lambda j: _groups(j)[0].update(minReplica=1), "'minReplica' was unexpected"),
        # KubeRay requires these per worker group
        (lambda j: _groups(j)[1].pop("groupName"), "'groupName' is a required"),
        (lambda j: _groups(j)[0].pop("maxReplicas"), "'maxReplicas' is a required"),
        # rayStartParams values are strings: a bare number is rejected by the API server
        (
            lambda j: _cluster_spec(j)["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
            "0 is not of type 'string'",
        ),
        (lambda j: _cluster_spec(j)["authOptions"].update(mode="on"), "'on' is not one of"),
    ],
)
def test_schema_rejects_what_kuberay_rejects(mutate, message):
    job = copy.deepcopy(_rayjob())
    mutate(job)
    errors = [e.message for e in _validator().iter_errors(job)]
    assert any(message in e for e in errors), errors


def _ray_version_pin() -> tuple[int, int]:
    text = (REPO / "pyproject.toml").read_text()
    low = re.search(r'"ray\[[^\]]*\]>=(\d+)\.(\d+)\.\d+,<(\d+)\.(\d+)"', text)
    assert low, "pyproject.toml: no ray[...]>=X.Y.Z,<X.Y' pin"
    return int(low.group(1)), int(low.group(2))


def test_image_ray_version_and_token_auth_agree():
    spec = _rayjob()["spec"]["rayClusterSpec"]
    assert spec["authOptions"] == {"mode": "token"}  # token authentication stays on
    version = spec["rayVersion"]
    assert tuple(map(int, version.split(".")[:2])) == _ray_version_pin()
    (base,) = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert base == f"rayproject/ray:{version}-py311-gpu"
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1  # one image on every node: the same code and Ray everywhere


def _node_resources(group: dict) -> dict[str, float]:
    """The Ray resources a node of this group advertises (what ``ray start`` gets from rayStartParams)."""
    params = group.get("rayStartParams", {})
    res = {"CPU": float(params["num-cpus"]), "GPU": float(params.get("num-gpus", 0))}
    if "resources" in params:
        # KubeRay passes --resources=<value> through a shell: undo that quoting, then it is JSON
        (value,) = shlex.split(params["resources"])
        res.update({k: float(v) for k, v in json.loads(value).items()})
    return res


def test_pod_requests_match_what_ray_advertises():
    spec = _rayjob()["spec"]["rayClusterSpec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        ray_res = _node_resources(group)
        (container,) = group["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits == requests  # guaranteed QoS: a trial is never throttled or evicted for its neighbours
        if ray_res["CPU"]:
            assert float(limits["cpu"]) == ray_res["CPU"]
        assert float(limits.get("nvidia.com/gpu", 0)) == ray_res["GPU"]


def _fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0) >= v for k, v in bundle.items() if v)


@pytest.mark.parametrize("name", available_experiments())
def test_worker_groups_can_host_every_experiment(name):
    spec = _rayjob()["spec"]["rayClusterSpec"]
    nodes = {g["groupName"]: _node_resources(g) for g in spec["workerGroupSpecs"]}
    plan = build_plan(load_experiment(name))
    for bundle in plan["placement_bundles"]:
        assert any(_fits(bundle, r) for r in nodes.values()), f"{name}: no worker group can host bundle {bundle}"
    assert not _fits(plan["placement_bundles"][0], _node_resources(spec["headGroupSpec"]))  # the head runs no trial
    if name == "arch_sweep":
        # deliberate placement: the learner on the GPU group, env runners on the rollout group
        main, *runners = plan["placement_bundles"]
        assert [n for n, r in nodes.items() if _fits(main, r)] == ["learner"]
        for b in runners:
            assert [n for n, r in nodes.items() if _fits(b, r)] == ["rollout"]


def test_entrypoint_is_a_valid_sweep_command(capsys):
    entrypoint = shlex.split(_rayjob()["spec"]["entrypoint"])
    assert entrypoint[:3] == ["python", "-m", "trainer.tune"]
    args = entrypoint[3:]
    assert args[args.index("--storage") + 1].startswith("s3://")  # every node writes trials to shared storage
    assert tune_main([*args, "--dry-run"]) == 0
    assert "experiment arch_sweep: 12 trial(s)" in capsys.readouterr().out
