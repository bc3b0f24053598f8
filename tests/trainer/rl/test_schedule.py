"""resources.schedule: the candidates that fit the CPUs, the fastest one taken and cached per machine and shapes,
an explicit schedule or placement left alone, and a real measurement that builds, trains and stops a probe."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from trainer.experiment.loading import ExperimentError, load_experiment
from trainer.rl import schedule as S

SMALL = {"sac.learning_starts": 100, "model.hidden": [16], "sac.rollout_fragment_length": 1}


def _exp(**overrides):
    return load_experiment("smoke", {**SMALL, **overrides}, sweep=False)


def _threads(exp) -> int:
    r = exp.resources
    return r.learner_torch_threads(r.num_env_runners)  # remote runners of a local run share its node


def test_candidates_fit_the_cpus():
    assert list(S.candidates(1)) == ["local, 1 learner thread(s)"]
    two = S.candidates(2)
    assert list(two) == [
        "local, 1 learner thread(s)",
        "local, 2 learner thread(s)",
        "remote, 2 learner thread(s)",
        "overlap, 1 learner thread(s)",
    ]
    exp = _exp()
    for label, overrides in two.items():
        chosen = S.with_overrides(exp, overrides)
        schedule = label.split(",")[0]
        assert chosen.resources.schedule == chosen.resources.schedule_in_effect() == schedule
        assert _threads(chosen) == int(label.split(", ")[1].split()[0])  # the label's learner threads
        cpus = chosen.resources.learner_cpus() + chosen.resources.num_env_runners  # what the run asks of Ray
        assert cpus == 2 or label.startswith("local, 1")
    assert "local, 8 learner thread(s)" in S.candidates(64) and "local, 16 learner thread(s)" not in S.candidates(64)
    assert list(S.candidates(3))[:3] == [
        "local, 1 learner thread(s)",
        "local, 2 learner thread(s)",
        "local, 3 learner thread(s)",
    ]


def test_a_round_of_several_env_steps_is_also_tried_as_one_step_of_that_many_envs():
    exp = _exp(**{"sac.rollout_fragment_length": 8})
    options = S.candidates(2, S.round_steps(exp))
    assert list(options) == [
        "local, 1 learner thread(s)",
        "local, 1 learner thread(s), 8 envs",
        "local, 2 learner thread(s)",
        "local, 2 learner thread(s), 8 envs",
        "remote, 2 learner thread(s)",
        "overlap, 1 learner thread(s)",
    ]
    for label, overrides in options.items():
        chosen = S.with_overrides(exp, overrides)
        r = chosen.resources
        # the same env steps, gradient steps and weight syncs per sampling round under every candidate
        assert chosen.sac.rollout_fragment_length * r.num_envs_per_env_runner == 8, label
        assert chosen.sac.training_intensity == exp.sac.training_intensity
        assert r.schedule == r.schedule_in_effect() == label.split(",")[0]
        assert (r.num_envs_per_env_runner == 8) == label.endswith("8 envs")
    # one env step a round (the default), a population (its env batches the agents) or too many: no such candidate
    assert not any("envs" in label for label in S.candidates(2, S.round_steps(_exp())))
    population = _exp(**{"sac.rollout_fragment_length": 8, "sac.population": 2})
    assert S.round_steps(population) == 1
    assert not any("envs" in label for label in S.candidates(2, S.MAX_ENVS + 1))


def test_the_fastest_is_taken_and_cached(tmp_path):
    cache = tmp_path / "schedules.json"
    rates = {"local": 100.0, "remote": 300.0, "overlap": 200.0}
    measured: list[str] = []

    def fake(exp):
        measured.append(exp.resources.schedule)
        return rates[exp.resources.schedule] + exp.resources.learner_cpus()

    lines: list[str] = []
    chosen = S.choose(_exp(), 2, fake, cache, lines.append)
    assert sorted(measured) == ["local"] * 4 + ["overlap"] * 2 + ["remote"] * 2  # each timed twice
    assert chosen.resources.schedule == "remote" and _threads(chosen) == 2
    assert chosen.resources.num_env_runners == 1 and not chosen.resources.overlap_sampling
    assert lines[-1].startswith("schedule: remote, 2 learner thread(s) (301 trained samples/s; local, 1 learner")
    stored = json.loads(cache.read_text())
    (entry,) = stored.values()
    assert entry["rates"]["remote, 2 learner thread(s)"] == 301.0

    def refuse(exp):
        raise AssertionError("measured again although cached")

    again = S.choose(_exp(), 2, refuse, cache, lines.append)  # the same machine and shapes: read back
    assert again.resources == chosen.resources and "from " + str(cache) in lines[-1]
    measured.clear()
    S.choose(_exp(**{"model.hidden": [32]}), 2, fake, cache, lines.append)  # other shapes: measured
    assert len(measured) == 8 and len(json.loads(cache.read_text())) == 2


def test_each_candidate_is_timed_twice_in_alternating_order_and_the_means_compared(tmp_path):
    """A machine that slows down during the timing: in one pass the first candidates would look fastest; the
    second pass runs backwards, so the means compare the candidates as if timed at the same moment."""
    order: list[str] = []
    true_rate = {"local, 1 learner thread(s)": 100.0, "local, 2 learner thread(s)": 104.0}
    labels = {label: o for label, o in S.candidates(2).items() if label in true_rate}

    def drifting(exp):
        label = next(k for k, o in labels.items() if S.with_overrides(_exp(), o) == exp)
        order.append(label)
        return true_rate[label] * (1 - 0.05 * len(order))  # 5% slower with every timing

    lines: list[str] = []
    fits = lambda exp: exp.resources.num_env_runners == 0  # noqa: E731  only the two local candidates
    chosen = S.choose(_exp(), 2, drifting, tmp_path / "c.json", lines.append, fits=fits)
    first, second = list(labels)
    assert order == [first, second, second, first]
    assert _threads(chosen) == 2  # a single pass would have taken the first, 1 thread (95 against 93.6)
    (entry,) = json.loads((tmp_path / "c.json").read_text()).values()
    assert entry["rates"][first] == pytest.approx((95.0 + 80.0) / 2)
    assert entry["rates"][second] == pytest.approx((104 * 0.9 + 104 * 0.85) / 2)
    assert lines[3] == f"  {second}: {104 * 0.85:,.0f} trained samples/s (mean of 2: {104 * 0.875:,.0f})"


LOCAL1, LOCAL2 = "local, 1 learner thread(s)", "local, 2 learner thread(s)"
REMOTE, OVERLAP = "remote, 2 learner thread(s)", "overlap, 1 learner thread(s)"


def _rates_by_label(rates: dict[str, float]):
    """A measure function that gives each candidate of ``S.candidates(2)`` its rate in ``rates``."""
    options = S.candidates(2)

    def rate(exp):
        return next(rates[k] for k, o in options.items() if S.with_overrides(_exp(), o) == exp)

    return rate


def test_local_schedules_close_to_the_fastest_are_timed_side_by_side_and_that_decides(tmp_path):
    cache, lines, asked = tmp_path / "c.json", [], []
    means = {LOCAL1: 100.0, LOCAL2: 95.0, REMOTE: 90.0, OVERLAP: 40.0}  # remote is close too, but not local

    def paired(exps, stopped):
        asked.append(exps)
        assert not stopped()
        return {LOCAL1: 101.0, LOCAL2: 120.0}

    chosen = S.choose(_exp(), 2, _rates_by_label(means), cache, lines.append, side_by_side_fn=paired)
    (exps,) = asked
    assert list(exps) == [LOCAL1, LOCAL2]
    assert exps[LOCAL2] == S.with_overrides(_exp(), S.candidates(2)[LOCAL2])
    assert _threads(chosen) == 2 and chosen.resources.schedule == "local"
    assert lines[-4] == "schedule: 2 local schedules within 15% of the fastest; timing them side by side"
    assert lines[-3:-1] == [
        f"  {LOCAL1}: 101 trained samples/s side by side",
        f"  {LOCAL2}: 120 trained samples/s side by side",
    ]
    # the side-by-side figures decided, so they lead the line; every pass mean follows
    figures = f"120 trained samples/s side by side; {LOCAL1} 101; means of the passes: {LOCAL1} 100, {LOCAL2} 95"
    assert lines[-1].startswith(f"schedule: {LOCAL2} ({figures}, {REMOTE} 90, {OVERLAP} 40; kept in {cache}); ")
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["side_by_side"] == {LOCAL1: 101.0, LOCAL2: 120.0} and entry["rates"] == means

    def refuse(*args):
        raise AssertionError("measured again although cached")

    again = S.choose(_exp(), 2, refuse, cache, lines.append, side_by_side_fn=refuse)  # read back, same decision
    assert again.resources == chosen.resources and f"({figures}, " in lines[-1]  # (the cache sorts its keys)
    assert f"{OVERLAP} 40" in lines[-1] and f"{REMOTE} 90" in lines[-1] and "; measured " in lines[-1]


def test_at_most_the_three_fastest_close_schedules_are_timed_side_by_side(tmp_path):
    exp = _exp(**{"sac.rollout_fragment_length": 8})
    options = S.candidates(2, S.round_steps(exp))
    means = dict(zip(options, (97.0, 99.0, 98.0, 100.0, 10.0, 10.0), strict=True))  # the four local ones close
    asked = []

    def rate(probe):
        return next(means[k] for k, o in options.items() if S.with_overrides(exp, o) == probe)

    def paired(exps, stopped):
        asked.append(list(exps))
        return dict.fromkeys(exps, 1.0) | {list(exps)[-1]: 2.0}

    chosen = S.choose(exp, 2, rate, tmp_path / "c.json", lambda line: None, side_by_side_fn=paired)
    assert asked == [[f"{LOCAL2}, 8 envs", f"{LOCAL1}, 8 envs", LOCAL2]]  # fastest mean first; 97 left out
    assert chosen == S.with_overrides(exp, options[LOCAL2])


@pytest.mark.parametrize(
    "means",
    [
        {LOCAL1: 100.0, LOCAL2: 84.0, REMOTE: 50.0, OVERLAP: 40.0},  # the next local one is 16% behind
        {LOCAL1: 95.0, LOCAL2: 96.0, REMOTE: 100.0, OVERLAP: 40.0},  # the fastest is remote
    ],
    ids=["none close", "remote fastest"],
)
def test_no_side_by_side_timing_unless_local_schedules_are_close_at_the_top(tmp_path, means):
    def refuse(exps, stopped):
        raise AssertionError("timed side by side")

    chosen = S.choose(_exp(), 2, _rates_by_label(means), tmp_path / "c.json", lambda line: None, side_by_side_fn=refuse)
    assert chosen == S.with_overrides(_exp(), S.candidates(2)[max(means, key=means.__getitem__)])
    (entry,) = json.loads((tmp_path / "c.json").read_text()).values()
    assert entry["side_by_side"] == {}


def test_a_failed_side_by_side_timing_leaves_the_means_to_decide_and_a_stop_caches_nothing(tmp_path):
    means = {LOCAL1: 100.0, LOCAL2: 95.0, REMOTE: 50.0, OVERLAP: 40.0}
    lines: list[str] = []

    def broken(exps, stopped):
        raise RuntimeError("out of memory\nmore")

    chosen = S.choose(_exp(), 2, _rates_by_label(means), tmp_path / "c.json", lines.append, side_by_side_fn=broken)
    assert _threads(chosen) == 1 and "  side by side: could not be timed (out of memory); the means decide" in lines
    cache = tmp_path / "stopped.json"
    chosen = S.choose(_exp(), 2, _rates_by_label(means), cache, lines.append, side_by_side_fn=lambda e, s: None)
    assert chosen.resources.schedule == "local" and _threads(chosen) == 1 and not cache.exists()


class _FakeProbe:
    """What side_by_side uses of a built probe, recording its rounds in ``log``."""

    def __init__(self, label: str, threads: int, log: list, stop_fails: bool = False) -> None:
        self.label, self.torch_threads, self.log, self.stop_fails = label, threads, log, stop_fails
        self.updates_lifetime, self.population_seeds, self.stopped = 0, None, 0
        self.config = type("Config", (), {"total_train_batch_size": 10})()

    def training_step(self) -> None:
        import torch

        self.log.append((self.label, torch.get_num_threads()))
        self.updates_lifetime += 1
        time.sleep(0.01)

    def stop(self) -> None:
        self.stopped += 1
        if self.stop_fails:
            raise RuntimeError("stop failed")


def test_side_by_side_times_in_alternating_turns_each_at_its_threads_and_stops_every_probe(monkeypatch):
    import torch

    log, built = [], []
    threads = {LOCAL1: 1, LOCAL2: 2}

    def probe(exp):
        label = next(k for k in threads if S.with_overrides(_exp(), S.candidates(2)[k]) == exp)
        built.append(_FakeProbe(label, threads[label], log, stop_fails=label == LOCAL1))
        return built[-1]

    monkeypatch.setattr(S, "_probe", probe)
    exps = {label: S.with_overrides(_exp(), S.candidates(2)[label]) for label in threads}
    before = torch.get_num_threads()
    rates = S.side_by_side(exps, seconds=0.035, slice_seconds=0.0)  # one round (10 ms) a turn: 4 turns or more
    assert torch.get_num_threads() == before  # the process' threads as they were
    assert set(rates) == set(threads) and all(r == pytest.approx(10 / 0.01, rel=0.5) for r in rates.values())
    turns = [log[i : i + 2] for i in range(0, len(log), 2)]
    assert len(turns) >= 4 and len(log) % 2 == 0
    for n, turn in enumerate(turns):  # every other turn in reverse order, each round at its probe's threads
        assert turn == ([(LOCAL1, 1), (LOCAL2, 2)] if n % 2 == 0 else [(LOCAL2, 2), (LOCAL1, 1)])
    assert [p.stopped for p in built] == [1, 1]  # the first probe's failing stop did not keep the second running

    # a build that fails stops the probes already built; a stop signal between builds builds no more
    built.clear()
    real = probe

    def second_fails(exp):
        if built:
            raise MemoryError("no room for a second probe")
        return real(exp)

    monkeypatch.setattr(S, "_probe", second_fails)
    with pytest.raises(MemoryError):
        S.side_by_side(exps)
    assert [p.stopped for p in built] == [1]
    built.clear()
    monkeypatch.setattr(S, "_probe", probe)
    flags = iter([False, True])
    assert S.side_by_side(exps, stopped=lambda: next(flags)) is None
    assert len(built) == 1 and built[0].stopped == 1


def test_side_by_side_times_real_probes(ray_session):
    import torch

    before = torch.get_num_threads()
    exps = {label: S.with_overrides(_exp(), S.candidates(2)[label]) for label in (LOCAL1, LOCAL2)}
    rates = S.side_by_side(exps, seconds=0.3, slice_seconds=0.1)
    assert set(rates) == {LOCAL1, LOCAL2} and all(r > 0 for r in rates.values())
    assert torch.get_num_threads() == before


def test_a_damaged_cache_is_measured_again(tmp_path):
    cache = tmp_path / "schedules.json"
    cache.write_text("{not json")
    chosen = S.choose(_exp(), 2, lambda exp: float(_threads(exp)), cache, lambda line: None)
    assert _threads(chosen) == 2 and json.loads(cache.read_text())


@pytest.mark.parametrize(
    "overrides, schedule, threads",
    [
        ({"resources.schedule": "local"}, "local", 1),  # forced
        ({"resources.torch_threads": 1}, "local", 1),  # a placement of the user's own
        ({"resources.num_env_runners": 0}, "local", 1),  # given, even at its default value
        ({"resources.num_cpus_per_env_runner": 2}, "local", 1),
        ({"resources.num_env_runners": 1}, "remote", 2),
        ({"resources.num_env_runners": 1, "resources.overlap_sampling": True}, "overlap", 1),
        ({"resources.schedule": "overlap"}, "overlap", 1),
    ],
)
def test_an_experiment_that_decides_is_not_measured(tmp_path, overrides, schedule, threads):
    def refuse(exp):
        raise AssertionError("measured")

    chosen = S.choose(_exp(**overrides), 2, refuse, tmp_path / "c.json", lambda line: None)
    assert chosen.resources.schedule == schedule and _threads(chosen) == threads
    assert not (tmp_path / "c.json").exists()


def test_a_failing_probe_is_skipped_and_a_partial_timing_not_cached(tmp_path):
    cache, lines = tmp_path / "schedules.json", []

    def flaky(exp):
        if exp.resources.schedule == "remote":
            raise RuntimeError("actor died\nlong traceback")
        return float(_threads(exp))

    chosen = S.choose(_exp(), 2, flaky, cache, lines.append)
    assert lines.count("  remote, 2 learner thread(s): could not be timed (actor died); skipped") == 1  # not retried
    assert chosen.resources.schedule == "local" and _threads(chosen) == 2 and not cache.exists()
    lines.clear()
    chosen = S.choose(_exp(), 2, lambda exp: 1 / 0, cache, lines.append)  # nothing can be timed
    assert lines[-1] == "schedule: no schedule could be timed; sampling in the learner's process (local)"
    assert chosen.resources.schedule == "local" and _threads(chosen) == 1


def test_a_signal_stops_the_timing(tmp_path):
    measured = []

    def once(exp):
        measured.append(exp)
        return 1.0

    chosen = S.choose(_exp(), 2, once, tmp_path / "c.json", lambda line: None, stopped=lambda: bool(measured))
    assert len(measured) == 1 and chosen.resources.schedule == "local" and _threads(chosen) == 1
    assert not (tmp_path / "c.json").exists()


def test_schedules_that_do_not_fit_in_memory_are_not_candidates(tmp_path):
    measured = []

    def rate(exp):
        measured.append(exp.resources.schedule)
        return float(_threads(exp))

    fits = lambda exp: exp.resources.num_env_runners == 0  # noqa: E731  the runners' processes do not fit
    chosen = S.choose(_exp(), 2, rate, tmp_path / "c.json", lambda line: None, fits=fits)
    assert measured == ["local"] * 4 and _threads(chosen) == 2


@pytest.mark.parametrize(
    "entry",
    [
        [1, 2],
        {"rates": {"local, 1 learner thread(s)": "fast"}},
        {"rates": None},
        "text",
        {"rates": dict.fromkeys(S.candidates(2), 1.0), "side_by_side": {"local, 9 learner thread(s)": 5.0}},
        {"rates": dict.fromkeys(S.candidates(2), 1.0), "side_by_side": {"local, 1 learner thread(s)": -1}},
    ],
    ids=["a list", "text rates", "no rates", "text", "side by side of another candidate", "negative side by side"],
)
def test_a_malformed_cache_entry_is_measured_again(tmp_path, entry):
    cache = tmp_path / "schedules.json"
    key = f"{S.machine()} | {S.shape_key(_exp(), 2)}"
    cache.write_text(json.dumps({key: entry, "other machine": {"rates": {"x": 1.0}}}))
    chosen = S.choose(_exp(), 2, lambda exp: float(_threads(exp)), cache, lambda line: None)
    assert _threads(chosen) == 2
    stored = json.loads(cache.read_text())
    assert len(stored[key]["rates"]) == 4 and stored["other machine"] == {"rates": {"x": 1.0}}


def test_a_resume_can_force_another_schedule(tmp_path):
    from trainer.experiment.stored import experiment_for_resume

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    recorded = S.with_overrides(_exp(), S.candidates(2)["local, 2 learner thread(s)"])
    (run / "experiment.yaml").write_text(yaml.safe_dump(recorded.model_dump(mode="json")))
    ckpt = run / "checkpoints" / "checkpoint_000001"
    same, _ = experiment_for_resume(ckpt, {})
    assert same.resources == recorded.resources
    remote, changed = experiment_for_resume(ckpt, {"resources.schedule": "remote"})
    assert remote.resources.schedule_in_effect() == "remote" and remote.resources.num_env_runners == 1
    assert changed == {"resources.schedule": ("local", "remote")}
    overlap, _ = experiment_for_resume(ckpt, {"resources.num_env_runners": 1, "resources.overlap_sampling": True})
    assert overlap.resources.schedule == "auto" and overlap.resources.schedule_in_effect() == "overlap"
    with pytest.raises(ExperimentError, match=r"resources\.schedule local disagrees"):
        experiment_for_resume(ckpt, {"resources.schedule": "local", "resources.num_env_runners": 2})


def test_one_cpu_has_one_candidate(tmp_path):
    chosen = S.choose(_exp(), 1, lambda exp: 1 / 0, tmp_path / "c.json", lambda line: None)
    assert chosen.resources.schedule == "local" and _threads(chosen) == 1


def test_a_schedule_that_disagrees_with_the_runners_is_refused():
    with pytest.raises(ExperimentError) as err:
        _exp(**{"resources.schedule": "local", "resources.num_env_runners": 2})
    assert str(err.value).endswith(
        "from the command line: key 'resources': Value error, resources.schedule local disagrees with "
        "resources.num_env_runners=2 and resources.overlap_sampling=False (they describe remote): local needs "
        "num_env_runners 0, remote needs num_env_runners >= 1 without overlap_sampling, overlap needs both; "
        "change one, or set resources.schedule=auto"
    )


def test_a_real_measurement_trains_a_probe_and_stops_it(ray_session):
    import ray

    before = ray.available_resources().get("CPU")
    rate = S.measure(S.with_overrides(_exp(), S.candidates(2)["remote, 2 learner thread(s)"]), seconds=0.2)
    assert rate > 0
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU") != before and time.monotonic() < deadline:
        time.sleep(0.2)  # Ray returns a stopped actor's CPU a moment later
    assert ray.available_resources().get("CPU") == before  # its env runner is gone again


def test_train_on_its_own_instance_takes_the_cached_choice_and_records_it(tmp_path):
    """``trainer.train`` with no cluster to join: its own Ray instance's CPUs are shared out by the measured
    figures (seeded here, so the choice is known), the choice is printed and recorded, and the run trains with it."""
    import os
    import subprocess
    import sys

    import yaml

    args = ["--set", "sac.learning_starts=100", "--set", "model.hidden=[16]", "--steps", "400"]
    cpus = os.cpu_count() or 1
    if cpus < 2:
        pytest.skip("one CPU: there is no schedule to choose")
    run_exp = load_experiment("smoke", {"sac.learning_starts": 100, "model.hidden": [16]}, sweep=False)
    assert run_exp.sac.rollout_fragment_length == 4  # smoke's rounds: 4 env steps, also tried as 4 envs at once
    winner = "local, 2 learner thread(s), 4 envs"
    seeded = {}
    for n in range(2, max(cpus, 2) + 1):  # whatever CPU count Ray reports for its own instance (a cgroup may cap it)
        rates = {label: 10.0 for label in S.candidates(n, S.round_steps(run_exp))} | {winner: 99.0}
        seeded[f"{S.machine()} | {S.shape_key(run_exp, n)}"] = {"rates": rates, "measured": "seeded"}
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "schedules.json").write_text(json.dumps(seeded))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PORTFOLIO_RL_CACHE=str(cache), PYTHONUNBUFFERED="1")
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "trainer.train", "--exp", "smoke", "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"schedule: {winner} (99 trained samples/s; local, 1 learner thread(s) 10" in res.stdout
    recorded = yaml.safe_load((out / "experiment.yaml").read_text())
    resources = recorded["resources"]
    assert resources["schedule"] == "local" and resources["overlap_sampling"] is False
    assert resources["num_env_runners"] == 0 and resources["num_cpus_per_learner"] == 2
    # the round's 4 env steps as one step of 4 envs: what a resume trains with
    assert resources["num_envs_per_env_runner"] == 4 and recorded["sac"]["rollout_fragment_length"] == 1
    assert json.loads((out / "summary.json").read_text())["env_steps"] >= 400
