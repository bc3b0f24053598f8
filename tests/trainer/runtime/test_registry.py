"""trainer.runtime.registry: round IDs, restarting an unfinished round without losing its files, the atomic live
pointer and its history, rollback rules, and the write lock."""

from __future__ import annotations

import json
import os

import pytest

from trainer.runtime import registry as R


def _decided(registry, round_id: str, promoted: bool) -> None:
    """Finish a started round as the command does: a checkpoint folder under it and the gate's decision."""
    ckpt = R.round_dir(registry, round_id) / "runs" / "seed0" / "checkpoints" / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    record = R.read_round(registry, round_id)
    reason = "promoted: test" if promoted else "not promoted: Sharpe - EW -0.500 < +0.000 (min_sharpe_minus_ew)"
    record.update(status=R.STATUS_DECIDED, promoted=promoted, reason=reason, checkpoint=R.relative(registry, ckpt))
    R.write_round(registry, round_id, record)
    if promoted:
        R.set_live(registry, round_id, record, "promoted by the gate")


def test_round_ids_restarts_and_the_live_pointer(tmp_path):
    registry = R.registry_dir(tmp_path / "reg", must_exist=False)
    assert registry.is_absolute() and R.rounds(registry) == [] and R.live_record(registry) is None
    first, notes = R.start_round(registry, "2020-03-31")
    assert (first, notes) == ("2020-03-31", [])
    assert R.read_round(registry, first)["status"] == R.STATUS_RUNNING
    _decided(registry, first, promoted=True)
    live = json.loads((registry / R.LIVE_FILE).read_text())
    assert live["round"] == first and live["previous"] is None
    assert live["checkpoint"] == "rounds/2020-03-31/runs/seed0/checkpoints/checkpoint_000001"  # relative
    assert R.live_checkpoint(registry) == registry / live["checkpoint"]
    # a decided round is never touched: another round on the same date gets the next ID
    again, _ = R.start_round(registry, "2020-03-31")
    assert again == "2020-03-31_2"
    # an unfinished round (killed while running) is started again under its ID, its files kept aside
    (R.round_dir(registry, again) / "runs").mkdir()
    (R.round_dir(registry, again) / "runs" / "partial.txt").write_text("x")
    restarted, notes = R.start_round(registry, "2020-03-31")
    aside = next(R.round_dir(registry, again).glob(f"{R.PREVIOUS_ATTEMPT_PREFIX}*"))
    assert restarted == again and notes == [
        f"round {again} was running: started again (its earlier attempt's files moved to {aside})"
    ]
    assert (aside / "runs" / "partial.txt").read_text() == "x" and (aside / R.ROUND_FILE).is_file()
    _decided(registry, again, promoted=False)
    later, _ = R.start_round(registry, "2020-06-30")
    _decided(registry, later, promoted=True)
    assert [rid for rid, _ in R.rounds(registry)] == ["2020-03-31", "2020-03-31_2", "2020-06-30"]
    assert R.live_model(registry).round == later
    # rollback: never to a round that failed the gate; to a promoted one in one call; twice changes nothing
    with pytest.raises(R.RegistryError) as err:
        R.rollback(registry, again)
    assert str(err.value) == (
        "round 2020-03-31_2: never passed the gate (not promoted: Sharpe - EW -0.500 < +0.000 "
        "(min_sharpe_minus_ew)); only a round that was promoted can be made live again (promoted rounds: "
        "2020-03-31, 2020-06-30)"
    )
    live, changed = R.rollback(registry, first)
    assert changed and live["round"] == first and live["previous"] == later
    assert R.rollback(registry, first) == (live, False)
    history = [json.loads(line) for line in (registry / R.HISTORY_FILE).read_text().splitlines()]
    assert [(h["round"], h["previous"]) for h in history] == [(first, None), (later, first), (first, later)]
    for bad in ("2021-01-01", "../reg", ""):
        with pytest.raises(R.RegistryError, match="not in registry"):
            R.read_round(registry, bad)


def test_the_live_pointer_is_replaced_whole_and_a_missing_checkpoint_is_named(tmp_path):
    registry = R.registry_dir(tmp_path, must_exist=False)
    rid, _ = R.start_round(registry, "2020-01-02")
    _decided(registry, rid, promoted=True)
    inode = (registry / R.LIVE_FILE).stat().st_ino
    R.set_live(registry, rid, R.read_round(registry, rid), "again")
    assert (registry / R.LIVE_FILE).stat().st_ino != inode  # a new file renamed over the old one
    assert not list(registry.glob(".*.tmp"))
    ckpt = R.live_checkpoint(registry)
    os.rename(ckpt, ckpt.with_name("moved"))
    with pytest.raises(R.RegistryError) as err:
        R.live_model(registry)
    assert str(err.value) == (
        f"{registry / R.LIVE_FILE}: the live checkpoint {ckpt} is missing; make another round live with python -m "
        f"trainer.rolling --registry {registry} --rollback ROUND"
    )
    (registry / R.LIVE_FILE).write_text("{half")
    with pytest.raises(R.RegistryError, match=r"live\.json: cannot be read as JSON"):
        R.live_record(registry)


def test_one_writer_at_a_time(tmp_path):
    registry = tmp_path / "reg"
    with R.registry_lock(registry):
        with pytest.raises(R.RegistryError) as err, R.registry_lock(registry):
            pass
        assert str(err.value) == (
            f"--registry {registry}: another round or rollback (process {os.getpid()}) is writing to it; wait for it "
            "to finish (two rounds never write one registry at once)"
        )
    with R.registry_lock(registry):  # released when the holder is done
        pass


def _history(registry) -> list[str]:
    return [json.loads(line)["round"] for line in (registry / R.HISTORY_FILE).read_text().splitlines()]


def test_a_promotion_cut_short_by_a_kill_is_finished_by_the_next_writer(tmp_path, capsys):
    registry = R.registry_dir(tmp_path / "reg", must_exist=False)
    (registry / R.ROUNDS_DIR).mkdir(parents=True)
    first, _ = R.start_round(registry, "2020-03-31")
    _decided(registry, first, promoted=True)
    # killed after the round's record said promoted, before live.json changed
    second, _ = R.start_round(registry, "2020-06-30")
    _decided(registry, second, promoted=False)
    R.write_round(registry, second, {**R.read_round(registry, second), "promoted": True, "reason": "promoted: test"})
    assert R.live_record(registry)["round"] == first
    with R.registry_lock(registry):
        pass
    assert R.live_record(registry)["round"] == second and _history(registry) == [first, second]
    assert "round 2020-06-30: promoted, but the process was killed before live.json changed" in capsys.readouterr().out
    # killed after live.json, before the history line
    third, _ = R.start_round(registry, "2020-09-30")
    _decided(registry, third, promoted=False)
    record = {**R.read_round(registry, third), "promoted": True}
    R.write_round(registry, third, record)
    (registry / R.LIVE_FILE).write_text(json.dumps({"round": third, "checkpoint": record["checkpoint"]}))
    with R.registry_lock(registry):
        pass
    assert _history(registry) == [first, second, third] and R.live_record(registry)["round"] == third
    # nothing half done: nothing changes, and a rollback is never undone
    R.rollback(registry, first)
    for _ in range(2):
        with R.registry_lock(registry):
            pass
    assert R.live_record(registry)["round"] == first and _history(registry) == [first, second, third, first]
