"""Tables, PNG plots and the Markdown/HTML report of a backtest."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trainer.metrics import registry as M

Columns = tuple[M.Metric, ...]
_RELATIVE = M.shown_in(M.BENCHMARK)  # a benchmark section's columns


def _columns() -> Columns:
    return M.shown_in(M.REPORT)


def metrics_frame(strategies: dict[str, dict[str, float]], columns: Columns | None = None) -> pd.DataFrame:
    columns = columns or _columns()
    rows = {name: {m.label: s[m.key] for m in columns} for name, s in strategies.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def _rows(strategies: dict[str, dict[str, float]], columns: Columns | None) -> tuple[list[str], list[list[str]]]:
    columns = columns or _columns()
    header = ["strategy"] + [m.label for m in columns]
    return header, [[name] + [m.format(s[m.key]) for m in columns] for name, s in strategies.items()]


def text_table(strategies: dict[str, dict[str, float]], columns: Columns | None = None) -> str:
    """Fixed-width table for the terminal (``columns``: the registry's metrics, default those of ``REPORT``)."""
    header, rows = _rows(strategies, columns)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    head = line(header)
    return "\n".join([head, "-" * len(head), *(line(r) for r in rows)])


def markdown_table(strategies: dict[str, dict[str, float]], columns: Columns | None = None) -> str:
    header, rows = _rows(strategies, columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def save_figure(
    fig: Any, ax: Any, path: Path, *, title: str, ylabel: str, xlabel: str = "", legend_size: int = 8
) -> Path:
    """Title, labels, a legend outside the plotted data (right of the axes), grid; write the PNG, free the figure."""
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    if legend_size:  # 0: too many lines for a readable legend
        ax.legend(fontsize=legend_size, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# Strategies by name: the agent bold and first in the palette, each look-ahead variant dashed in its model's colour.
_PALETTE = plt.get_cmap("tab10").colors


def _strategy_styles(columns: list[str]) -> dict[str, dict[str, Any]]:
    base = [c for c in columns if not c.endswith("_lookahead")]
    colour = {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(base)}
    styles = {}
    for c in columns:
        own = c.removesuffix("_lookahead")
        styles[c] = {
            "color": colour.get(own, _PALETTE[len(colour) % len(_PALETTE)]),
            "linestyle": "--" if c.endswith("_lookahead") else "-",
            "linewidth": 2.2 if c == "sac" else 1.2,
        }
    return styles


# A benchmark series is not a strategy: black, dash-dotted, apart from the strategies' palette.
_BENCHMARK_STYLE = {"color": "black", "linestyle": "-.", "linewidth": 1.6}


def plot_equity(values: pd.DataFrame, path: Path, title: str, benchmark: pd.Series | None = None) -> Path:
    """Each strategy's value over time; ``benchmark`` (its value on the same days, start = 1; the series' name
    labels it) is drawn in its own style."""
    fig, ax = plt.subplots(figsize=(11, 5))
    styles = _strategy_styles(list(values.columns))
    for col in values.columns:
        ax.plot(values.index, values[col], label=col, **styles[col])
    if benchmark is not None:
        ax.plot(benchmark.index, benchmark.to_numpy(), label=str(benchmark.name), **_BENCHMARK_STYLE)
    ax.set_xlabel("date")
    return save_figure(fig, ax, path, title=title, ylabel="portfolio value (start = 1, after costs)")


def plot_drawdowns(values: pd.DataFrame, path: Path) -> Path:
    dd = 100.0 * (values / values.cummax() - 1.0)
    fig, ax = plt.subplots(figsize=(11, 4))
    styles = _strategy_styles(list(dd.columns))
    for col in dd.columns:
        ax.plot(dd.index, dd[col], label=col, **styles[col])
    ax.set_xlabel("date")
    return save_figure(fig, ax, path, title="Drawdowns", ylabel="drawdown from the running peak (%)")


TOP_HOLDINGS = 8  # weights.png: the largest holdings by mean weight, the rest summed as "other", and cash


def weights_for_plot(weights: pd.DataFrame, top: int = TOP_HOLDINGS) -> pd.DataFrame:
    """The ``top`` assets by mean weight (largest first), ``other`` (the rest, summed) and ``cash``: at most
    ``top + 2`` series, so each gets its own colour of a 10-colour palette."""
    assets = [c for c in weights.columns if c != "cash"]
    ranked = weights[assets].mean().sort_values(ascending=False).index.tolist()
    out = weights[ranked[:top]].copy()
    if len(ranked) > top:
        out[f"other ({len(ranked) - top} assets)"] = weights[ranked[top:]].sum(axis=1)
    if "cash" in weights:
        out["cash"] = weights["cash"]
    return out


def plot_weights(weights: pd.DataFrame, path: Path) -> Path:
    shown = weights_for_plot(weights)
    fig, ax = plt.subplots(figsize=(11, 5))
    colours = [_PALETTE[i % len(_PALETTE)] for i in range(len(shown.columns))]
    if "cash" in shown:
        colours[-1] = "lightgrey"
    ax.stackplot(shown.index, shown.to_numpy().T, labels=list(shown.columns), colors=colours)
    ax.set_ylim(0, 1)
    ax.set_xlabel("date")
    shown_assets = min(TOP_HOLDINGS, len(weights.columns) - 1)
    title = f"SAC agent weights over time (top {shown_assets} holdings by mean weight)"
    return save_figure(fig, ax, path, title=title, ylabel="weight (fraction of portfolio value)")


def plot_training(history: list[dict[str, Any]], path: Path) -> Path:
    """Critic loss, entropy (every iteration) and the validation Sharpe, drawn only at the iterations that ran
    a validation pass (in between, the training result repeats the last pass)."""
    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    validation_sharpe = M.split_key(M.VALIDATION, M.SHARPE)
    panels = [
        (M.CRITIC_LOSS, "critic loss", "loss (Huber, per batch)"),
        (M.ENTROPY, "policy entropy (-mean log pi)", "nats"),
        (validation_sharpe, "validation Sharpe (at each validation pass)", "Sharpe (annualised)"),
    ]
    for ax, (key, title, ylabel) in zip(axes, panels, strict=True):
        rows = frame
        if key == validation_sharpe and M.VALIDATED in frame:
            rows = frame[frame[M.VALIDATED].fillna(False).astype(bool)]
        if not rows.empty and key in rows:
            ax.plot(rows[M.ENV_STEPS], rows[key], marker="o" if key == validation_sharpe else ".", markersize=4)
        else:
            ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("env steps")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    if not frame.empty and M.CRITIC_LOSS in frame and (frame[M.CRITIC_LOSS] > 0).all():
        axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    out_dir: Path,
    *,
    title: str,
    facts: list[str],
    strategies: dict[str, dict[str, float]],
    descriptions: dict[str, str],
    plots: dict[str, str],
    relative: tuple[list[str], dict[str, dict[str, float]]] | None = None,
) -> tuple[Path, Path]:
    """``report.md`` and ``report.html``: facts, the table, what each strategy is, the plots; with ``relative``
    (lines about a benchmark, each strategy's figures against it) a section against the benchmark."""
    md = [f"# {title}", ""]
    md += [f"- {f}" for f in facts]
    md += ["", "## Results", "", markdown_table(strategies), ""]
    if relative is not None:
        notes, figures = relative
        md += ["## Against the benchmark", "", *(f"- {n}" for n in notes), "", markdown_table(figures, _RELATIVE), ""]
    md += ["## Strategies", ""]
    md += [f"- **{name}**: {descriptions.get(name, '')}" for name in strategies]
    md += ["", "## Plots", ""]
    md += [f"### {caption}\n\n![{caption}]({file})\n" for caption, file in plots.items()]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    frame = metrics_frame(strategies)
    fmt = {m.label: m.format for m in _columns()}
    table_html = frame.to_html(formatters=fmt, escape=True, border=0, classes="metrics")
    relative_html = []
    if relative is not None:
        notes, figures = relative
        relative_html = [
            "<h2>Against the benchmark</h2><ul>",
            *[f"<li>{html.escape(n)}</li>" for n in notes],
            "</ul>",
            metrics_frame(figures, _RELATIVE).to_html(
                formatters={m.label: m.format for m in _RELATIVE}, escape=True, border=0, classes="metrics"
            ),
        ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table.metrics{border-collapse:collapse}table.metrics td,table.metrics th{padding:4px 8px;"
        "border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><ul>",
        *[f"<li>{html.escape(f)}</li>" for f in facts],
        "</ul><h2>Results</h2>",
        table_html,
        *relative_html,
        "<h2>Strategies</h2><ul>",
        *[f"<li><b>{html.escape(n)}</b>: {html.escape(descriptions.get(n, ''))}</li>" for n in strategies],
        "</ul><h2>Plots</h2>",
        *[f"<h3>{html.escape(c)}</h3><img src='{html.escape(f)}' alt='{html.escape(c)}'>" for c, f in plots.items()],
        "</body></html>",
    ]
    html_path = out_dir / "report.html"
    html_path.write_text("\n".join(parts))
    return md_path, html_path


def nan_to_none(x: Any) -> Any:
    """JSON-safe floats (NaN/inf -> None), recursively."""
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [nan_to_none(v) for v in x]
    if isinstance(x, float | np.floating) and not np.isfinite(x):
        return None
    if isinstance(x, np.floating | np.integer):
        return x.item()
    return x
