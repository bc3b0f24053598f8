"""A sweep's search space as Ray Tune domains, and its plan (``trainer.tune --dry-run``) in words."""

from __future__ import annotations

from typing import Any

from trainer.experiment.config import ENV_CONFIG_GRID, SEED_KEY, SweepConfig


def tune_domains(sweep: SweepConfig, population: int | None = None) -> dict[str, Any]:
    """The search space as Ray Tune domains keyed by experiment field.

    Args:
        sweep: the experiment's sweep.
        population: ``sac.population``; a swept seed grid then holds each population's first seed (one trial
            trains seeds ``s .. s + K - 1``).
    """
    from ray import tune

    makers = {
        "grid_search": tune.grid_search,
        "choice": tune.choice,
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
    }
    domains = {key: makers[kind](arg) for key, (kind, arg) in sweep.domains(population).items()}
    if sweep.variants:
        # One grid dimension over every (variant, env-setting grid point) as a dict of data.* overrides.
        data_keys = [k for k in domains if k.startswith("data.")]
        points = [{}]
        for key in data_keys:
            points = [{**p, key: v} for p in points for v in domains.pop(key)["grid_search"]]
        domains[ENV_CONFIG_GRID] = tune.grid_search([{**v, **p} for v in sweep.variants.values() for p in points])
    return domains


def format_plan(plan: dict[str, Any]) -> str:
    """The plan of ``build_plan`` (``trainer.tune``) in lines, as ``--dry-run`` prints it."""
    k = plan["agents_per_trial"]
    agents = f" x {k} agents (a population of seeds s .. s+{k - 1} per trial)" if k > 1 else ""
    lines = [f"experiment {plan['experiment']}: {plan['trials']} trial(s){agents} on {plan['data']}"]
    for name, overrides in plan["variants"].items():
        lines.append(f"  variant {name}: {overrides or '(the experiment as written)'}")
    for key, spec in plan["search_space"].items():
        firsts = plan["trial_seeds"] if key == SEED_KEY else None
        grouped = f" -> {len(firsts)} population(s) from seeds {firsts}" if firsts else ""
        lines.append(f"  {key}: {spec}{grouped}")
    if plan["num_samples"] > 1:
        lines.append(f"  num_samples: {plan['num_samples']}")
    s = plan["scheduler"]
    if s["type"] == "asha":
        detail = (
            f"(time = env steps, grace {s['grace_period']:,}, reduction {s['reduction_factor']:g}, "
            f"max_t {s['max_t']:,})"
        )
    else:
        detail = "(no early stopping)"
    lines.append(f"scheduler: {s['type']} {detail}; metric {plan['metric']} ({plan['mode']})")
    budget, per_iteration = plan["env_steps_per_trial"], plan["env_steps_per_iteration"]
    whole = -(-budget // per_iteration) * per_iteration  # a trial stops after the iteration that reaches it
    rounded = f" (whole iterations of {per_iteration:,}: {whole:,})" if whole != budget else ""
    lines.append(f"budget: {budget:,} env steps per trial{rounded}")
    res = ", ".join(f"{k}: {v:g}" for k, v in plan["resources_per_trial"].items())
    lines.append(f"resources per trial: {res} (bundles {plan['placement_bundles']})")
    lines.append(
        f"concurrency: {plan['max_concurrent_trials'] or 'as resources allow'}; retries: {plan['max_failures']}"
    )
    if plan.get("memory"):
        lines.append(f"memory: {plan['memory']}")
    return "\n".join(lines)
