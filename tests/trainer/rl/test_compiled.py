"""trainer.rl.compiled: the compiled SAC step equals the eager fused step; resources.compile reaches the learner.

The CUDA-graph capture itself needs a GPU (``python -m benchmarks.gpu_check``); on a CPU these tests check the
compiled step's numerics (``aot_eager``: the same joint graph as Inductor, eager kernels; Inductor's own
C++ kernels in the ``slow`` test) and the wiring from the experiment key to the learner.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ray.rllib.algorithms.sac.sac_learner import QF_LOSS_KEY, QF_TWIN_LOSS_KEY, TD_ERROR_MEAN_KEY
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.utils.metrics import LEARNER_RESULTS, NUM_TARGET_UPDATES

import trainer.rl.compiled as compiled_mod
from trainer.experiment.loading import ExperimentError, load_experiment
from trainer.rl.compiled import CompiledSACStep, check_backend
from trainer.rl.losses import AGENTS_KEY, ALPHA_LOSS_KEY
from trainer.rl.sac_config import build_sac_config

MID = "default_policy"


def _state(learner) -> dict[str, torch.Tensor]:
    """Every parameter, log-alpha and every optimizer moment and step count, by name."""
    out = {name: p.detach().clone() for name, p in learner.module[MID].named_parameters()}
    out["log_alpha"] = learner.curr_log_alpha[MID].detach().clone()
    for name, opt in learner._named_optimizers.items():
        for i, state in enumerate(opt.state.values()):
            out.update({f"{name}.{i}.{k}": v.clone() for k, v in state.items()})
    return out


def _snapshot(learner) -> tuple[dict, dict]:
    return _state(learner), {n: copy.deepcopy(o.state_dict()) for n, o in learner._named_optimizers.items()}


def _restore(learner, snapshot: tuple[dict, dict]) -> None:
    params, optimizers = snapshot
    with torch.no_grad():
        for name, p in learner.module[MID].named_parameters():
            p.copy_(params[name])
        learner.curr_log_alpha[MID].copy_(params["log_alpha"])
    for name, opt in learner._named_optimizers.items():
        opt.load_state_dict(copy.deepcopy(optimizers[name]))


def _metrics(learner) -> dict[str, float]:
    keys = (QF_LOSS_KEY, QF_TWIN_LOSS_KEY, POLICY_LOSS_KEY, ALPHA_LOSS_KEY, TD_ERROR_MEAN_KEY)
    return {k: float(torch.as_tensor(learner.metrics.peek((MID, k)))) for k in keys}


def _compare_compiled_with_eager(algo, backend: str, rtol: float, atol: float) -> CompiledSACStep:
    learner = algo.learner_group._learner
    raw = algo._sample_batch(3).policy_batches[MID]  # three gradient steps' worth
    batch = {MID: {k: torch.as_tensor(np.asarray(v)) for k, v in raw.items()}}
    snapshot = _snapshot(learner)
    before = snapshot[0]

    torch.manual_seed(11)
    learner._update(batch)  # three eager fused steps
    eager, eager_metrics = _state(learner), _metrics(learner)

    _restore(learner, snapshot)
    step = CompiledSACStep(learner, backend=backend)
    learner._compiled_step = step
    try:
        torch.manual_seed(11)
        learner._update(batch)  # the same three steps, compiled
        compiled, compiled_metrics = _state(learner), _metrics(learner)
    finally:
        learner._compiled_step = None
    assert compiled_metrics == pytest.approx(eager_metrics, rel=1e-5)
    assert compiled.keys() == eager.keys()
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=rtol, atol=atol, msg=name)
        assert not torch.equal(value, before[name]), name  # policy, critics, targets, alpha, Adam all moved
    steps = [name for name in before if name.endswith(".step")]
    optimized = [p for opt in learner._named_optimizers.values() for g in opt.param_groups for p in g["params"]]
    assert len(steps) == len(optimized)  # the policy, both critics and log-alpha
    assert all(float(compiled[name]) == float(before[name]) + 3 for name in steps)  # three Adam steps each
    return step


def test_compiled_step_equals_the_eager_fused_step(algo):
    """aot_eager traces the same joint forward-backward graph Inductor compiles, with eager kernels: three
    compiled steps from the same state and seed give the eager steps' parameters, moments and metrics."""
    step = _compare_compiled_with_eager(algo, "aot_eager", rtol=1e-6, atol=1e-7)
    assert step.captures == 0  # no CUDA graph on a CPU


@pytest.mark.slow
def test_inductor_compiled_step_equals_the_eager_fused_step(algo):
    """Inductor's generated C++ kernels (about a minute of compilation on a 2-core CPU, hence slow)."""
    _compare_compiled_with_eager(algo, "inductor", rtol=1e-4, atol=1e-6)


def _live_tensors(learner) -> list[torch.Tensor]:
    """Every tensor a step writes: parameters (targets included), log-alpha, the optimizers' states."""
    tensors = [*learner.module[MID].parameters(), learner.curr_log_alpha[MID]]
    return tensors + [t for opt in learner._named_optimizers.values() for s in opt.state.values() for t in s.values()]


class _ReplayingStep(CompiledSACStep):
    """The CUDA-graph bookkeeping of ``CompiledSACStep`` on a CPU. Warm-up steps run without a side stream;
    "capturing" runs the step once and undoes it (a real capture runs no kernel and draws no random
    number), and each "replay" runs it again on the static inputs and writes its output into the captured
    output tensor, as a graph replay does."""

    def _warm_up_step(self, module_id, inputs):
        return self._body(module_id, inputs, with_metrics=True)

    def _record(self, step):
        tensors = _live_tensors(self.learner)
        saved, rng = [t.detach().clone() for t in tensors], torch.get_rng_state()
        packed = step()
        with torch.no_grad():
            for t, value in zip(tensors, saved, strict=True):
                t.copy_(value)
        torch.set_rng_state(rng)

        def replay() -> None:
            packed.copy_(step())

        return replay, packed


def _six_steps(learner, batch, step: CompiledSACStep | None) -> tuple[dict, dict]:
    learner._compiled_step = step
    try:
        torch.manual_seed(5)
        learner._update(batch)
    finally:
        learner._compiled_step = None
    return _state(learner), _metrics(learner)


def test_graph_bookkeeping_warms_up_captures_once_replays_new_inputs_and_recaptures(algo):
    """Six steps on six different batches: three warm-up steps, a capture, three replays on fresh inputs,
    equal to six eager steps. Replacing the optimizers' states (a checkpoint restore) makes the next call
    warm up and capture again instead of replaying a graph that updates the old state tensors."""
    learner = algo.learner_group._learner
    raw = algo._sample_batch(6).policy_batches[MID]
    batch = {MID: {k: torch.as_tensor(np.asarray(v)) for k, v in raw.items()}}
    snapshot = _snapshot(learner)
    eager, eager_metrics = _six_steps(learner, batch, None)

    step = _ReplayingStep(learner, backend="aot_eager", cuda_graphs=True)
    for run in (1, 2):
        _restore(learner, snapshot)  # new optimizer state tensors: the second run must recapture
        graphed, graphed_metrics = _six_steps(learner, batch, step)
        assert step.captures == run and step._warm == {next(iter(step._warm)): compiled_mod.WARMUP_STEPS}
        assert graphed_metrics == pytest.approx(eager_metrics, rel=1e-5)  # the packed output, last step
        for name, value in eager.items():
            torch.testing.assert_close(graphed[name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_a_step_that_cannot_be_captured_runs_compiled_without_a_graph(algo, caplog):
    learner = algo.learner_group._learner
    raw = algo._sample_batch(5).policy_batches[MID]
    batch = {MID: {k: torch.as_tensor(np.asarray(v)) for k, v in raw.items()}}
    snapshot = _snapshot(learner)
    eager, _ = _six_steps(learner, batch, None)

    class Uncapturable(_ReplayingStep):
        def _record(self, step):
            raise RuntimeError("operation not permitted when stream is capturing")

    _restore(learner, snapshot)
    step = Uncapturable(learner, backend="aot_eager", cuda_graphs=True)
    with caplog.at_level("WARNING", logger=compiled_mod.__name__):
        graphed, _ = _six_steps(learner, batch, step)
    assert step.captures == 0 and len(step._uncapturable) == 1
    assert caplog.messages == [
        "resources.compile: the SAC step could not be captured as a CUDA graph (operation not permitted when "
        "stream is capturing); running it compiled without a graph"
    ]
    for name, value in eager.items():
        torch.testing.assert_close(graphed[name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_cuda_graphs_are_chosen_for_one_cuda_learner(algo):
    learner = algo.learner_group._learner
    step = CompiledSACStep(learner, backend="aot_eager")
    assert not step._use_graphs(torch.device("cpu"))
    assert step._use_graphs(torch.device("cuda", 0))
    assert not CompiledSACStep(learner, backend="aot_eager", cuda_graphs=False)._use_graphs(torch.device("cuda", 0))


def test_resources_compile_trains_through_the_compiled_step(ray_session, monkeypatch, tmp_path):
    monkeypatch.setattr(compiled_mod, "DEFAULT_BACKEND", "aot_eager")  # Inductor's C++ build takes a minute
    exp = load_experiment(
        "smoke", {"resources.compile": True, "sac.learning_starts": 100, "stopping.steps_per_iteration": 200}
    )
    algo = build_sac_config(exp).build_algo()
    try:
        learner = algo.learner_group._learner
        assert isinstance(learner._compiled_step, CompiledSACStep)
        calls = []
        real = learner._compiled_step._body
        monkeypatch.setattr(learner._compiled_step, "_body", lambda *a, **k: calls.append(1) or real(*a, **k))
        result = algo.train()
        algo.save_to_path(str(tmp_path / "ckpt"))  # the compiled step is no part of the learner's state
    finally:
        algo.stop()
    assert len(calls) == algo.updates_lifetime > 10  # every gradient step went through the compiled step
    losses = result[LEARNER_RESULTS][MID]
    assert np.isfinite(losses[QF_LOSS_KEY]) and np.isfinite(losses[POLICY_LOSS_KEY])
    assert losses[NUM_TARGET_UPDATES] == algo.updates_lifetime  # the Polyak update is counted once per step


def test_compile_off_builds_no_compiled_step(algo):
    assert algo.config.learner_config_dict == {compiled_mod.COMPILE_KEY: False}
    assert algo.learner_group._learner._compiled_step is None


def test_missing_cpp_compiler_is_one_clear_error(monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def no_compiler():
        raise RuntimeError("Failed to find a working C++ compiler")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(ValueError) as err:
        check_backend(torch.device("cpu"))
    assert str(err.value) == (
        "resources.compile: torch.compile on a CPU learner needs a C++ compiler (Inductor generates C++ kernels), "
        "none was found (RuntimeError); install g++ or set resources.compile=false"
    )
    check_backend(torch.device("cuda", 0))  # Triton builds GPU kernels: no C++ compiler needed
    check_backend(torch.device("cpu"), "aot_eager")


def test_compile_key_validation():
    assert load_experiment("smoke", {"resources.compile": True}).resources.compile is True
    assert load_experiment("smoke").resources.compile is False
    with pytest.raises(ExperimentError) as err:
        load_experiment("smoke", {"resources.compile": "sometimes"})
    assert "key 'resources.compile': Input should be a valid boolean, unable to interpret input" in str(err.value)


@pytest.fixture(scope="module")
def population_algo(ray_session):
    exp = load_experiment(
        "smoke", {"sac.learning_starts": 100, "stopping.steps_per_iteration": 200, "sac.population": 2}
    )
    algo = build_sac_config(exp).build_algo()
    algo.train()
    yield algo
    algo.stop()


def test_a_population_step_compiles_and_its_packed_metrics_unpack_per_agent(population_algo):
    """A population (agent-major [K, B, ...] batches, per-agent generators, [K] metrics) through the compiled
    step and the graph bookkeeping: six steps equal six eager steps, and each agent's logged metrics too."""
    learner = population_algo.learner_group._learner
    raw = population_algo._sample_batch(6).policy_batches[MID]
    batch = {MID: {k: torch.as_tensor(np.asarray(v)) for k, v in raw.items()}}
    generators = learner._agent_generators[MID]
    snapshot, noise = _snapshot(learner), [g.get_state() for g in generators]

    def agent_metrics() -> list[float]:
        return [float(learner.metrics.peek((MID, AGENTS_KEY, str(i), QF_LOSS_KEY))) for i in range(len(generators))]

    eager, eager_metrics = _six_steps(learner, batch, None)
    eager_agents = agent_metrics()
    step = _ReplayingStep(learner, backend="aot_eager", cuda_graphs=True)
    _restore(learner, snapshot)
    for g, state in zip(generators, noise, strict=True):
        g.set_state(state)
    graphed, graphed_metrics = _six_steps(learner, batch, step)
    assert step.captures == 1
    assert graphed_metrics == pytest.approx(eager_metrics, rel=1e-5)
    assert agent_metrics() == pytest.approx(eager_agents, rel=1e-5) and eager_agents[0] != eager_agents[1]
    for name, value in eager.items():
        torch.testing.assert_close(graphed[name], value, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: the real CUDA-graph capture runs only there; on a CPU the bookkeeping tests above "
    "(a stand-in that runs the step where a capture would) check warm-up, capture, replay and recapture",
)
def test_real_cuda_graph_capture_trains_on_a_gpu(ray_session):
    """On a GPU machine: a learner on the GPU with resources.compile warms up, captures the step as one CUDA
    graph and replays it; the losses stay finite and every gradient step is counted once."""
    exp = load_experiment(
        "smoke",
        {
            "resources.compile": True,
            "resources.num_gpus_per_learner": 1,
            "sac.learning_starts": 100,
            "stopping.steps_per_iteration": 200,
        },
    )
    algo = build_sac_config(exp).build_algo()
    try:
        learner = algo.learner_group._learner
        assert torch.device(learner._device).type == "cuda"
        results = [algo.train() for _ in range(2)]
        step = learner._compiled_step
        assert isinstance(step, CompiledSACStep) and step.captures >= 1
    finally:
        algo.stop()
    losses = results[-1][LEARNER_RESULTS][MID]
    assert np.isfinite(losses[QF_LOSS_KEY]) and np.isfinite(losses[POLICY_LOSS_KEY])
    assert losses[NUM_TARGET_UPDATES] == algo.updates_lifetime
