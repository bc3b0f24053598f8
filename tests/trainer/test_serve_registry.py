"""The decision service on a rolling registry: it decides with the live model and follows promotions and
rollbacks without a restart (real Ray Serve, real HTTP on 127.0.0.1)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("ray.serve", reason='Ray Serve is the serve extra: pip install -e ".[serve]"')

from envs.data import PriceData, load_prices
from tests.conftest import free_port
from tests.trainer.test_serve import ROWS, _request, call
from tests.trainer.test_serve_cli import _one_line, _serve
from trainer.evaluation import decision_service
from trainer.evaluation.decision import Member, decide
from trainer.evaluation.decision_report import decision_json
from trainer.evaluation.decision_sources import live_members
from trainer.runtime.registry import LIVE_FILE, ROUNDS_DIR, set_live


def _expected(checkpoint, data: str, as_of: str) -> dict:
    tail = load_prices(data).prices.iloc[-ROWS:]
    return decision_json(decide([Member(checkpoint)], PriceData("prices", "wide", tail), as_of=as_of), None)


def test_the_service_follows_the_live_model(limited_run, tmp_path):
    ckpts, data = limited_run
    first, second = ckpts[-1], tmp_path / "retrained" / ckpts[-1].name  # another round's checkpoint (a copy)
    shutil.copytree(first, second)
    registry = tmp_path / "registry"
    (registry / ROUNDS_DIR).mkdir(parents=True)
    set_live(registry, "r1", {"checkpoint": str(first), "agent": None, "date": "2020-01-02"}, "promoted")
    members, chosen = live_members(registry)
    assert chosen == f"the live model of {registry} (round r1)"
    url = decision_service.start(members, chosen, host="127.0.0.1", port=free_port(), registry=registry)
    try:
        request = _request(data)
        status, answer = call(url, "/decide", request)
        assert status == 200 and answer == _expected(first, data, request["as_of"])
        assert answer["checkpoint"] == str(first)
        # a promotion: the next request uses the new live model, and /model says so
        set_live(registry, "r2", {"checkpoint": str(second), "agent": None, "date": "2020-04-01"}, "promoted")
        status, answer = call(url, "/decide", request)
        assert status == 200 and answer == _expected(second, data, request["as_of"])
        assert answer["checkpoint"] == str(second)
        status, model = call(url, "/model")
        assert status == 200 and model["checkpoint"] == str(second) and "(round r2)" in model["chosen"]
        # a damaged live.json: the model in use keeps deciding
        (registry / LIVE_FILE).write_text("{not json")
        status, answer = call(url, "/decide", request)
        assert status == 200 and answer == _expected(second, data, request["as_of"])
        # the file restored, and a rollback: back to the first model
        (registry / LIVE_FILE).unlink()
        set_live(registry, "r1", {"checkpoint": str(first), "agent": None, "date": "2020-01-02"}, "rollback")
        status, answer = call(url, "/decide", request)
        assert status == 200 and answer == _expected(first, data, request["as_of"])
        assert answer["checkpoint"] == str(first)
    finally:
        decision_service.stop()


def test_registry_refusals_are_one_line(limited_run, tmp_path):
    ckpts, _ = limited_run
    empty = tmp_path / "empty"
    (empty / ROUNDS_DIR).mkdir(parents=True)
    assert _one_line(_serve("--registry", str(empty))).startswith(f"error: --registry {empty}: no live model yet")
    assert _one_line(_serve(str(ckpts[-1]), "--registry", str(empty))) == (
        "error: give SOURCE (a checkpoint, run or sweep directory) or --registry DIR, one of them"
    )
    assert _one_line(_serve("--registry", str(empty), "--agent", "0")) == (
        "error: --registry decides with the live model (its own agent); drop --agent / --ensemble"
    )
