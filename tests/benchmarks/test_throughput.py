"""benchmarks.throughput and its parts (trainer_runs, comparison_runs, throughput_report): the derived figures,
the wall-time estimates, SB3's best thread count, bad input."""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks import comparison_runs as C
from benchmarks import population_runs as P
from benchmarks import throughput as T
from benchmarks import throughput_report as R
from benchmarks import trainer_runs as M


def test_each_schedule_is_compared_at_its_own_thread_count():
    row = {
        "torch_threads_overlap": 1.0,
        "torch_threads_sync": 1.0,
        "torch_threads_remote": 2.0,
        "trained_samples_per_s_overlap": 256 * 60.0,
        "trained_samples_per_s_sync": 256 * 40.0,
        "trained_samples_per_s_remote": 256 * 90.0,
        "learner_only_updates_per_s_1_threads": 75.0,
        "learner_only_updates_per_s_2_threads": 100.0,
        "ceiling_updates_per_s_1_threads": 150.0,
        "ceiling_updates_per_s_2_threads": 300.0,
        "gemm_gflops_1_threads": 123.0,
        "sb3_trained_samples_per_s": 256 * 30.0,
    }
    out = R.derive(row, batch=256)
    # unsuffixed: at the headline (overlapped) schedule's thread count
    assert out["learner_only_updates_per_s"] == out["learner_updates_per_s"] == 75.0
    assert out["learner_trained_samples_per_s"] == 75.0 * 256
    assert out["ceiling_updates_per_s"] == 150.0 and out["gemm_gflops"] == 123.0
    assert out["fraction_of_learner_only_overlap"] == pytest.approx(60 / 75)
    assert out["fraction_of_ceiling_overlap"] == pytest.approx(60 / 150)
    assert out["fraction_of_learner_only_sync"] == pytest.approx(40 / 75)
    assert out["fraction_of_learner_only_remote"] == pytest.approx(90 / 100)  # its learner had 2 threads
    assert out["fraction_of_ceiling_remote"] == pytest.approx(90 / 300)
    assert out["ratio_vs_sb3_overlap"] == pytest.approx(2.0) and out["ratio_vs_sb3_remote"] == pytest.approx(3.0)
    assert not any(k.startswith("fraction_of_own_learner") for k in out)  # none was timed


def test_each_schedule_is_also_compared_with_its_own_learner_timed_right_after_it():
    row = {
        "torch_threads_sync": 1.0,
        "torch_threads_local2": 2.0,
        "trained_samples_per_s_sync": 256 * 40.0,
        "trained_samples_per_s_local2": 256 * 90.0,
        "learner_only_updates_per_s_1_threads": 75.0,
        "learner_only_updates_per_s_2_threads": 120.0,
        "learner_alone_updates_per_s_sync": 50.0,  # the machine was slower in that minute
        "learner_alone_updates_per_s_local2": 100.0,
    }
    out = R.derive(row, batch=256, headline_schedule="local2")
    assert out["fraction_of_own_learner_sync"] == pytest.approx(40 / 50)
    assert out["fraction_of_own_learner_local2"] == pytest.approx(90 / 100)
    assert out["fraction_of_learner_only_local2"] == pytest.approx(90 / 120)  # the figure per thread count, as before


def test_without_sb3_there_is_no_ratio():
    row = {
        "torch_threads_overlap": 1.0,
        "trained_samples_per_s_overlap": 256.0,
        "learner_only_updates_per_s_1_threads": 2.0,
    }
    out = R.derive(row, batch=256)
    assert out["fraction_of_learner_only_overlap"] == 0.5
    assert not any(k.startswith(("ratio_vs_sb3", "fraction_of_ceiling")) or k.endswith("_sync") for k in out)


def test_study_plan_on_two_cores():
    """3 variants x 5 seeds x 3 folds; each trial asks for one CPU; the sweep allows 2 at a time."""
    assert M.study_plan(2) == {
        "study_trials": 45.0,
        "study_env_steps_per_trial": 8000.0,
        "study_concurrent_trials": 2.0,
    }
    assert M.study_plan(1)["study_concurrent_trials"] == 1.0
    assert M.study_plan(16)["study_concurrent_trials"] == 2.0  # max_concurrent_trials caps it


def test_wall_time_estimates():
    result = {
        "env_steps_per_s": 50.0,
        "study_trials": 45.0,
        "study_concurrent_trials": 2.0,
        "study_env_steps_per_trial": 8000.0,
        "study_env_steps_per_s": 100.0,
    }
    out = R.wall_time_estimates(result)
    assert out["reference_run_hours"] == pytest.approx(1_000_000 / 50 / 3600)
    assert out["study_hours"] == pytest.approx(23 * 80 / 3600)  # 23 waves of 2 trials, 80 s each
    assert "study_hours" not in R.wall_time_estimates({"env_steps_per_s": 50.0})


def test_summary_takes_medians_the_headline_and_the_lowest_round_against_sb3():
    rounds = [
        {"trained_samples_per_s_overlap": 10.0, "env_steps_per_s_overlap": 1.0, "ratio_vs_sb3_overlap": 2.0},
        {"trained_samples_per_s_overlap": 30.0, "env_steps_per_s_overlap": 3.0, "ratio_vs_sb3_overlap": 1.5},
        {"trained_samples_per_s_overlap": 20.0, "env_steps_per_s_overlap": 2.0, "sb3_error_1_threads": "boom"},
    ]
    rounds[0].update(ratio_vs_sb3_sync=1.0, ratio_vs_sb3_remote=3.0)
    rounds[1].update(ratio_vs_sb3_sync=0.5, ratio_vs_sb3_remote=2.5)
    out = R.summary(rounds)
    assert out["trained_samples_per_s"] == out["trained_samples_per_s_overlap"] == 20.0
    assert out["env_steps_per_s"] == 2.0
    assert out["ratio_vs_sb3"] == out["ratio_vs_sb3_overlap"] == 1.75  # the rounds SB3 ran in
    assert out["ratio_vs_sb3_overlap_lowest_round"] == 1.5 and out["ratio_vs_sb3_sync_lowest_round"] == 0.5
    assert "sb3_error_1_threads" not in out
    assert "ratio_vs_sb3" not in R.summary([{"trained_samples_per_s_overlap": 1.0, "env_steps_per_s_overlap": 1.0}])


def test_sb3_is_counted_at_its_best_thread_count(monkeypatch):
    speeds = {1: {"sb3_trained_samples_per_s": 9000.0}, 2: {"sb3_trained_samples_per_s": 11000.0}}
    monkeypatch.setattr(C, "_sb3", lambda path, steps, threads: speeds[threads])
    row = C.sb3_turn("sb3", 100, [1, 2])
    assert row["sb3_trained_samples_per_s"] == 11000.0 and row["sb3_best_threads"] == 2.0
    assert row["sb3_trained_samples_per_s_1_threads"] == 9000.0
    speeds[2] = {"sb3_error": "boom"}
    row = C.sb3_turn("sb3", 100, [1, 2])
    assert row["sb3_trained_samples_per_s"] == 9000.0 and row["sb3_error_2_threads"] == "boom"


def test_cpu_needs_no_overrides():
    assert M.device_overrides("cpu") == {}


def test_cuda_without_a_gpu_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as info:
        M.device_overrides("cuda")
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --device cuda: torch {torch.__version__} sees no CUDA device on this machine (built with CUDA: "
        f"{torch.version.cuda or 'no'}); run it on a machine with an NVIDIA GPU, or without --device for the "
        "CPU figures\n"
    )


def test_cuda_puts_the_learner_on_one_gpu_compiled(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert M.device_overrides("cuda") == {"resources.num_gpus_per_learner": 1, "resources.compile": True}


@pytest.mark.parametrize("threads", ["0", "two", "1,,2"])
def test_bad_thread_counts_are_refused(threads, capsys):
    with pytest.raises(SystemExit):
        T.main(["--threads", threads])
    assert "--threads must be" in capsys.readouterr().err


def test_machine_names_the_cpu_and_the_gpu():
    text = R.machine()
    assert f"{os.cpu_count()} cores" in text
    assert text.endswith(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")


def test_population_rates_count_every_agents_samples(ray_session, monkeypatch):
    """A tiny real run of the population measurement: a population's trained samples are K per row of its
    batches (each update trains every agent), compared with one agent of the single-agent path."""
    import ray

    monkeypatch.setattr(P, "start_ray", lambda device: None)  # the session's Ray instance
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    tiny = {
        "model.hidden": [16],
        "sac.batch_size": 32,
        "sac.training_intensity": 32,
        "sac.buffer_size": 2000,
        "sac.learning_starts": 50,
        "sac.rollout_fragment_length": 4,
        "stopping.steps_per_iteration": 40,
    }
    rates = P.population_rates([2], iterations=1, device="cpu", extra=tiny, repeats=2)
    (pop,) = rates
    assert pop["k"] == 2 and pop["trained_samples_per_s"] > 0
    assert pop["vs_separate_agents_lowest_turn"] <= pop["vs_separate_agents"]
    # one gradient step per env step of 32 rows for each of the 2 agents: samples/s = 2 x 32 x env steps/s
    assert pop["trained_samples_per_s"] == pytest.approx(32 * pop["agent_env_steps_per_s"], rel=0.05)
    # the learner alone and the bound its matrix products set, at the population's own shapes
    assert pop["learner_vs_separate_agents"] > 0 and 0 < pop["gemm_share_of_single_update"] < 1
    assert 0 < pop["gemm_share_of_population_update"] < 1 and pop["batched_gemms_vs_k_single"] > 0
    assert pop["gemm_bound_vs_separate_agents"] == pytest.approx(
        1 / (pop["gemm_share_of_single_update"] * pop["batched_gemms_vs_k_single"]), rel=1e-9
    )


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("env_speed", ["--steps", "-5"], "argument --steps: expected a whole number >= 1, got -5"),
        ("env_speed", ["--repeats", "0"], "argument --repeats: expected a whole number >= 1, got 0"),
        ("throughput", ["--rounds", "two"], "argument --rounds: expected a whole number >= 1, got 'two'"),
        ("throughput", ["--raw-eager", "/no/such.py"], "argument --raw-eager: /no/such.py: no such file"),
        ("population_memory", ["--agents", "0"], "argument --agents: expected a whole number >= 1, got 0"),
        ("gpu_check", ["--calls", "0"], "argument --calls: expected a whole number >= 1, got 0"),
    ],
)
def test_bad_benchmark_arguments_are_one_line_usage_errors_before_any_measuring(module, args, message, capsys):
    import importlib

    main = importlib.import_module(f"benchmarks.{module}").main
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"python -m benchmarks.{module}: error: {message}")


def test_a_json_file_in_a_missing_folder_is_refused_before_measuring(tmp_path, capsys):
    from benchmarks import env_speed

    target = tmp_path / "missing" / "speed.json"
    with pytest.raises(SystemExit) as info:
        env_speed.main(["--json", str(target)])
    assert info.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"error: argument --json: {target}: folder {target.parent} does not exist; create it or choose another"
        )
    )
    with pytest.raises(SystemExit):
        env_speed.main(["--json", str(tmp_path)])
    assert f"{tmp_path} is a folder; give a file name for the JSON results" in capsys.readouterr().err


def test_sb3_runs_before_and_after_ours_and_its_better_turn_counts():
    before = {"sb3_trained_samples_per_s_1_threads": 9000.0, "sb3_trained_samples_per_s_2_threads": 12000.0}
    before.update(sb3_trained_samples_per_s=12000.0, sb3_best_threads=2.0)
    after = {"sb3_trained_samples_per_s_1_threads": 13000.0, "sb3_trained_samples_per_s_2_threads": 10000.0}
    after.update(sb3_trained_samples_per_s=13000.0, sb3_best_threads=1.0)
    row = C.sb3_before_and_after(before, after)
    assert row["sb3_before_trained_samples_per_s_2_threads"] == 12000.0
    assert row["sb3_after_trained_samples_per_s_1_threads"] == 13000.0
    assert row["sb3_trained_samples_per_s"] == 13000.0 and row["sb3_best_threads"] == 1.0  # the after turn
    assert row["sb3_trained_samples_per_s_2_threads"] == 10000.0  # the counted turn's own figures
    failed = C.sb3_before_and_after(before, {"sb3_error_1_threads": "boom"})
    assert failed["sb3_trained_samples_per_s"] == 12000.0 and failed["sb3_after_error_1_threads"] == "boom"
    assert "sb3_trained_samples_per_s" not in C.sb3_before_and_after({}, {})


def test_the_chosen_schedule_is_the_headline_and_marked():
    row = {
        "torch_threads_overlap": 1.0,
        "torch_threads_local2": 2.0,
        "trained_samples_per_s_overlap": 256 * 60.0,
        "trained_samples_per_s_local2": 256 * 90.0,
        "env_steps_per_s_overlap": 60.0,
        "env_steps_per_s_local2": 90.0,
        "learner_only_updates_per_s_1_threads": 75.0,
        "learner_only_updates_per_s_2_threads": 100.0,
        "sb3_trained_samples_per_s": 256 * 75.0,
    }
    row.update(R.derive(row, 256, "local2"))
    assert row["learner_only_updates_per_s"] == 100.0  # at the chosen schedule's 2 threads
    assert row["fraction_of_learner_only_local2"] == pytest.approx(0.9)
    out = R.summary([row], "local2")
    assert out["trained_samples_per_s"] == 256 * 90.0 and out["ratio_vs_sb3"] == pytest.approx(1.2)
    assert out["ratio_vs_sb3_lowest_round"] == pytest.approx(1.2)
    result = {**out, "machine": "m", "device": "cpu", "rounds": [row], "chosen_schedule": "local2"}
    result["chosen_schedule_label"] = "local, 2 learner thread(s)"
    result["chosen_schedule_rates"] = {"local, 2 learner thread(s)": 23000.0}
    text = R.report(result, 1, [1, 2])
    assert "synchronous local sampling, 2 learner threads [chosen by auto]: trained samples/s" in text
    assert "resources.schedule auto chose: synchronous local sampling, 2 learner threads (its own timing: " in text
    assert "overlapped sampling [chosen by auto]" not in text
    result.update(chosen_schedule=None, chosen_schedule_label="local, 8 learner thread(s)")
    assert "auto chose: local, 8 learner thread(s) (not a schedule timed here)" in R.report(result, 1, [1, 2])


def test_autos_candidates_on_two_cpus_are_the_benchmarks_schedules():
    from trainer.experiment.loading import load_experiment
    from trainer.rl.schedule import candidates, round_steps, with_overrides

    exp = load_experiment("reference", M.REFERENCE_OVERRIDES)
    options = candidates(2, round_steps(exp))
    assert set(M.CANDIDATES) == set(options)
    for label, overrides in options.items():
        ours = M._experiment(M.SCHEDULES[M.CANDIDATES[label]][1])  # what the benchmark times as that schedule
        chosen = with_overrides(exp, overrides)
        # the benchmark names auto's pick by this: exactly one candidate is the chosen experiment
        assert [other for other, o in options.items() if M._is(chosen, exp, o)] == [label]
        assert ours.resources.schedule_in_effect() == chosen.resources.schedule_in_effect()
        assert ours.resources.learner_torch_threads(ours.resources.num_env_runners) == (
            chosen.resources.learner_torch_threads(chosen.resources.num_env_runners)
        )
        assert ours.resources.num_envs_per_env_runner == chosen.resources.num_envs_per_env_runner
        assert ours.sac.rollout_fragment_length == chosen.sac.rollout_fragment_length
