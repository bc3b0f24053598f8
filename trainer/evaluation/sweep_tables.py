"""The sweep summary as people read it: the terminal table, ``summary.md`` and the plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer.metrics import registry as M


def _num(value: Any, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def _iqr(s: dict[str, Any], fmt: str = "+.2f") -> str:
    if not s.get("n"):
        return "n/a"
    return f"{_num(s['median'], fmt)} [{_num(s['q25'], fmt)}, {_num(s['q75'], fmt)}]"


def _ci(s: dict[str, Any]) -> str:
    lo, hi = s.get("ci95") or (None, None)
    ci = f" (95% CI {_num(lo, '+.2f')} .. {_num(hi, '+.2f')})" if lo is not None else ""
    return f"{_num(s.get('median'), '+.2f')}{ci}"


def headline_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Per configuration: runs, test Sharpe, Sharpe minus EW with its interval, beat-EW share, turnover; then
    the configuration's seed ensemble (one run per fold)."""
    rows = []
    for g in summary["configurations"]:
        rows.append(
            [
                g["config"],
                f"{g['n_seeds']} x {g['n_folds']}",
                _iqr(g["best_checkpoint_score"]),
                _iqr(g["test_sharpe"]),
                _ci(g["test_sharpe_minus_ew"]),
                _num(g["beat_ew_fraction"], ".0%"),
                _num(g["test_turnover_per_day"]["median"], ".3f"),
                _iqr(g[M.split_key("test", M.TOTAL_COSTS)], ".3f"),
            ]
        )
        ens = g.get("ensemble")
        if ens:
            rows.append(
                [
                    f"{g['config']} [seed ensemble]",
                    f"1 x {len(ens['folds'])}",
                    "",
                    _iqr(ens["test_sharpe"]),
                    _ci(ens["test_sharpe_minus_ew"]),
                    _num(ens["beat_ew_fraction"], ".0%"),
                    _num(ens["test_turnover_per_day"]["median"], ".3f"),
                    "",
                ]
            )
    return rows


HEADLINE = [
    "configuration",
    "seeds x folds",
    "validation score",
    "test Sharpe",
    "test Sharpe - EW",
    "beat EW",
    f"turnover/day ({M.BY_KEY[M.TURNOVER].unit})",
    f"costs paid ({M.BY_KEY[M.TOTAL_COSTS].unit})",
]


def interval_note(summary: dict[str, Any]) -> list[str]:
    """What the 95% interval resamples, and what it cannot show for the seeds and folds at hand."""
    n_seeds = max((g["n_seeds"] for g in summary["configurations"]), default=0)
    n_folds = max((g["n_folds"] for g in summary["configurations"]), default=0)
    lines = [
        "The 95% interval resamples the test days in blocks (a stationary bootstrap, the same days for every "
        "seed of a fold and for Equal Weight) and takes the median over the runs in each resample: it measures "
        "how much the median could move with other market days, not with other seeds or other market periods."
    ]
    if n_seeds <= 1:
        lines.append(
            "**One seed per configuration**: the interval cannot show how much the result depends on the seed "
            "(training randomness); run more seeds (`sweep.search_space.seed`) before trusting a difference."
        )
    if n_folds <= 1:
        lines.append(
            "**One test window**: the figures describe one market period; walk-forward folds (`data.folds`) show "
            "whether they hold in others."
        )
    return lines


def _relative_columns() -> list[tuple[str, M.Metric]]:
    """The figures against a benchmark other than the Sharpe difference: (summary key, metric)."""
    return [(M.split_key("test", m.key), m) for m in M.shown_in(M.BENCHMARK) if m.key != M.SHARPE_MINUS_BENCHMARK]


def benchmark_markdown(summary: dict[str, Any]) -> list[str]:
    """The section against ``sweep.benchmark``: per configuration the paired Sharpe difference with its interval,
    the share of runs above the benchmark and the other figures (median [IQR]); the benchmark on each window."""
    b = summary.get("benchmark")
    if not b:
        return []
    if b["error"]:
        return ["", f"Benchmark `{b['spec']}`: not compared, {b['error']}"]
    diff = M.split_key("test", M.SHARPE_MINUS_BENCHMARK)
    header = ["configuration", "runs", "test Sharpe - benchmark", "beat benchmark"]
    header += [m.label for _, m in _relative_columns()]
    lines = [
        "",
        f"Against the benchmark {b['label']} (`{b['spec']}`) on each run's test window, the same days paired as with "
        "Equal Weight (median [interquartile range]; the Sharpe difference with its 95% block-bootstrap interval):",
        "",
        *(f"- {line}" for line in (b["conventions"], *b["notes"])),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for g in summary["configurations"]:
        cells = [g["config"], str(g[diff]["n"]), _ci(g[diff]), _num(g["beat_benchmark_fraction"], ".0%")]
        cells += [_iqr(g[key], m.fmt) for key, m in _relative_columns()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| fold | test window | benchmark Sharpe | benchmark total return |", "|---|---|---|---|"]
    for f in b["folds"]:
        lines.append(
            f"| {_fold(f['fold'])} | {f['test'][0]} .. {f['test'][1]} | {_num(f.get('test_sharpe'), '+.2f')} | "
            f"{_num(f.get('test_total_return'), '+.1%')} |"
        )
    return lines


def benchmark_lines(summary: dict[str, Any]) -> list[str]:
    """The comparison with ``sweep.benchmark`` on the terminal: one line per configuration (medians)."""
    b = summary.get("benchmark")
    if not b:
        return []
    if b["error"]:
        return [f"benchmark {b['spec']}: not compared, {b['error']}"]
    diff = M.split_key("test", M.SHARPE_MINUS_BENCHMARK)
    lines = [f"\nagainst the benchmark {b['label']} ({b['spec']}), test windows, medians over runs:"]
    for g in summary["configurations"]:
        figures = ", ".join(f"{m.label} {m.format(g[key]['median'])}" for key, m in _relative_columns())
        beat = _num(g["beat_benchmark_fraction"], ".0%")
        lines.append(f"  {g['config']}: Sharpe - benchmark {_ci(g[diff])}, beat {beat}; {figures}")
    return lines + [f"  note: {n}" for n in b["notes"]]


def best_text(summary: dict[str, Any]) -> str:
    best = summary["best_configuration"]
    return best if best is not None else "none (no configuration has a scored checkpoint)"


def _fold(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else str(value)


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Sweep {summary['experiment']}",
        "",
        f"Selection metric: `{summary['metric']}` ({summary['mode']}), read on validation windows only; "
        f"{summary['env_steps_per_trial']:,} env steps per trial. Each trial is scored by its best checkpoint. "
        "Statistics are across seeds and folds: median [interquartile range]; the Sharpe difference to Equal "
        "Weight is paired (same days, same costs) with a 95% block-bootstrap interval of the median.",
        "",
        *interval_note(summary),
        "",
        "| " + " | ".join(HEADLINE) + " |",
        "|" + "---|" * len(HEADLINE),
        *("| " + " | ".join(r) + " |" for r in headline_rows(summary)),
        "",
    ]
    if summary["folds"]:
        lines += ["Windows:", "", "| fold | validation | test |", "|---|---|---|"]
        for f in summary["folds"]:
            val, test = f.get("validation", ["?", "?"]), f.get("test", ["?", "?"])
            lines.append(f"| {_fold(f['fold'])} | {val[0]} .. {val[1]} | {test[0]} .. {test[1]} |")
        lines.append("")
    over = "median over folds" if len(summary["folds"]) > 1 else "on the one test window"
    lines += [f"Baselines on the same windows and costs ({over}; fitted on each training window):", ""]
    lines += ["| baseline | validation Sharpe | test Sharpe | test total return |", "|---|---|---|---|"]
    for name, b in summary["baselines"].items():
        lines.append(
            f"| {name} | {_num(b.get('validation_sharpe'), '+.2f')} | {_num(b.get('test_sharpe'), '+.2f')} | "
            f"{_num(b.get('test_total_return'), '+.1%')} |"
        )
    for name, reasons in summary.get("baselines_not_fitted", {}).items():
        lines.append(f"| {name} | not fitted: {'; '.join(reasons)} | | |")
    lines += benchmark_markdown(summary)
    failed = [t for t in summary["trials"] if t["status"] == M.STATUS_ERROR]
    if failed:
        lines += ["", f"**{len(failed)} of {len(summary['trials'])} trial(s) failed** (their errors are below)."]
    best = summary["best_configuration"]
    lines += ["", f"Best configuration (by median validation score): **{best_text(summary)}**"]
    for g in summary["configurations"]:
        if g["config"] == best and g.get("deflated_sharpe_vs_ew") is not None:
            lines.append(
                f"- deflated Sharpe ratio of its test excess return over Equal Weight, corrected for choosing "
                f"the best of {len(summary['configurations'])} configuration(s): {g['deflated_sharpe_vs_ew']:.2f} "
                "(probability that the true excess Sharpe is above zero; >= 0.95 would be significant)"
            )
    if summary["best_trial"]:
        best = summary["best_trial"]
        agent = ""
        if best.get("agent") is not None:  # one agent of a population checkpoint
            agent = f" (agent {best['agent']} of its population: backtest with `--agent {best['agent']}`)"
        lines.append(f"- best trial: {best['trial']}, checkpoint `{best['best_checkpoint']}`{agent}")
    if summary["best_backtest_report"]:
        lines.append(f"- test-window backtest of it: `{summary['best_backtest_report']}`")
    lines += [
        "",
        "Trials:",
        "",
        "| trial | configuration | fold | seed | status | env steps | validation score | test Sharpe | "
        "test Sharpe - EW | turnover/day |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in summary["trials"]:
        lines.append(
            f"| {t['trial']} | {t['config']} | {_fold(t['fold'])} | {t['seed']} | {t['status']} | {t['env_steps']:,} | "
            f"{_num(t.get('best_checkpoint_score'), '+.2f')} | {_num(t.get('test_sharpe'), '+.2f')} | "
            f"{_num(t.get('test_sharpe_minus_ew'), '+.2f')} | {_num(t.get('test_turnover_per_day'), '.3f')} |"
        )
    if failed:
        lines += ["", "Errors:", ""] + [f"- {t['trial']}: {t['error']}" for t in failed]
    lines += ["", *[f"![{name}]({file})" for name, file in summary["plots"].items()], ""]
    return "\n".join(lines)


def print_summary(summary: dict[str, Any], exp_dir: Path) -> None:
    """The results table on the terminal."""
    print(f"\n=== Sweep {summary['experiment']}: results by configuration (across seeds and folds) ===")
    rows = [HEADLINE, *headline_rows(summary)]
    for name, b in summary["baselines"].items():
        # a baseline has no validation score of ours: its test Sharpe (median over folds) only
        rows.append([f"baseline: {name}", "", "", _num(b.get("test_sharpe"), "+.2f")])
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(HEADLINE))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for name, reasons in summary.get("baselines_not_fitted", {}).items():
        print(f"baseline {name}: not fitted, {'; '.join(reasons)}")
    for line in benchmark_lines(summary):
        print(line)
    failed = [t for t in summary["trials"] if t["status"] == M.STATUS_ERROR]
    if failed:
        print(
            f"{len(failed)} of {len(summary['trials'])} trial(s) failed: "
            + "; ".join(f"{t['trial']}: {t['error']}" for t in failed)
        )
    print(f"\nbest configuration (by median validation score): {best_text(summary)}")
    if summary["best_backtest_report"]:
        print(f"backtest report of its best checkpoint (test window): {summary['best_backtest_report']}")
    print(f"summary: {exp_dir / 'summary.md'} | {exp_dir / 'summary.json'} | trials: {exp_dir / 'trials.parquet'}")


def sweep_plots(
    curves: dict, trials: pd.DataFrame, groups: list[dict], by_fold: list[dict], exp_dir: Path, target: int
) -> dict[str, str]:
    import matplotlib.pyplot as plt

    from trainer.evaluation.report import save_figure  # also selects the headless backend

    fig, ax = plt.subplots(figsize=(10, 5))
    for trial_id, (steps, vals, status) in sorted(curves.items()):
        finite = np.isfinite(vals)
        (line,) = ax.plot(steps[finite], vals[finite], marker=".", label=f"{trial_id} ({status})")
        if status != M.STATUS_COMPLETED and finite.any():
            ax.plot(steps[finite][-1], vals[finite][-1], "x", color=line.get_color(), markersize=12, mew=2)
    ax.axvline(target, color="grey", linestyle=":", linewidth=1)
    save_figure(
        fig,
        ax,
        exp_dir / "validation_curves.png",
        title="Validation score per trial (x = stopped early / diverged)",
        ylabel="selection metric (validation)",
        xlabel="env steps",
        legend_size=6 if len(curves) <= 12 else 0,
    )

    # Per fold (x): each seed's test Sharpe (dots, one colour per configuration, spread left of its slot), the
    # seed ensemble (a diamond to the right of the dots, so no dot hides under it) and the classical baselines
    # fitted on that fold's training window (dashes).
    fig, ax = plt.subplots(figsize=(12, 5.5))
    folds = sorted(trials["fold"].dropna().unique().tolist()) or [None]
    pos = {f: i for i, f in enumerate(folds)}
    labels = sorted(trials["config"].unique())
    width = 0.7 / max(len(labels), 1)
    for j, name in enumerate(labels):
        ens = next((g.get("ensemble") for g in groups if g["config"] == name), None) or {"folds": []}
        for fold in folds:
            sel = (trials["config"] == name) & (trials["fold"].isna() if fold is None else trials["fold"] == fold)
            v = trials.loc[sel, "test_sharpe"].to_numpy(dtype=float)
            left = pos[fold] - 0.35 + width * j
            xs = left + width * (0.1 + 0.5 * np.arange(v.size) / max(v.size - 1, 1))
            ax.scatter(xs, v, color=f"C{j}", s=18, label=name if fold == folds[0] else None, zorder=3)
            for e in ens["folds"]:
                if e["fold"] == fold:
                    label = "seed ensemble" if (j, fold) == (0, folds[0]) else None
                    ax.scatter(
                        [left + width * 0.8],
                        [e["test_sharpe"]],
                        marker="D",
                        s=50,
                        color=f"C{j}",
                        edgecolor="black",
                        label=label,
                        zorder=4,
                    )
    styles = {"equal_weight": ("black", "-"), "min_volatility": ("grey", "--"), "max_sharpe": ("grey", ":")}
    for b in by_fold:
        if b["fold"] not in pos:
            continue
        i = pos[b["fold"]]
        for name, value in b["test_sharpe"].items():
            color, style = styles.get(name, ("grey", "-."))
            first = b is next(x for x in by_fold if x["fold"] in pos)
            ax.hlines(
                value, i - 0.4, i + 0.4, color=color, linestyle=style, linewidth=1.5, label=name if first else None
            )
    ax.set_xticks(range(len(folds)))
    ax.set_xticklabels([f"fold {f}" if f is not None else "test split" for f in folds])
    save_figure(
        fig,
        ax,
        exp_dir / "test_sharpe_by_fold.png",
        title="Test Sharpe per fold: seeds (dots), seed ensemble (diamond), baselines (lines), after costs",
        ylabel="test Sharpe (annualised)",
        legend_size=7,
    )
    return {
        "Validation score vs env steps": "validation_curves.png",
        "Test Sharpe by fold, beside the baselines": "test_sharpe_by_fold.png",
    }
