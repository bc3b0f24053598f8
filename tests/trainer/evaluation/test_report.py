"""trainer.evaluation.report: exact table text, JSON-safe values, the Markdown/HTML report and its PNG plots."""

from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from trainer.evaluation.report import (
    TOP_HOLDINGS,
    markdown_table,
    metrics_frame,
    nan_to_none,
    plot_drawdowns,
    plot_equity,
    plot_training,
    plot_weights,
    text_table,
    weights_for_plot,
    write_report,
)
from trainer.metrics import registry as M

SAC = {
    "total_return": 0.019494,
    "annualized_return": 1.68,
    "annualized_volatility": 0.3995,
    "sharpe": 4.20526,
    "sortino": 7.48331,
    "max_drawdown": 0.02,
    "calmar": 84.0,
    "turnover_per_day": 1.3 / 3,
    "total_costs": 0.00129989,
    "effective_number_assets": 5 / 3,
    "final_value": 1.019494,  # not a table column: ignored by the tables
}
EW = {
    "total_return": -0.1234,
    "annualized_return": -0.05,
    "annualized_volatility": 0.1,
    "sharpe": -0.5,
    "sortino": -0.75,
    "max_drawdown": 0.25,
    "calmar": -0.2,
    "turnover_per_day": 0.0126,
    "total_costs": 0.0,
    "effective_number_assets": 20.0,
}
STRATEGIES = {"sac": SAC, "equal_weight": EW}
SAC_CELLS = ["+1.9%", "+168.0%", "40.0%", "+4.21", "+7.48", "2.0%", "+84.00", "0.433", "0.0013", "1.7"]
EW_CELLS = ["-12.3%", "-5.0%", "10.0%", "-0.50", "-0.75", "25.0%", "-0.20", "0.013", "0.0000", "20.0"]


def test_text_table_is_aligned_and_formats_every_cell():
    expected = "\n".join(
        [
            "strategy      Total return  Ann. return  Ann. vol  Sharpe  Sortino  "
            "Max DD  Calmar  Turnover/day   Costs  Eff. N",
            "-" * 112,
            "sac                  +1.9%      +168.0%     40.0%   +4.21    +7.48  "
            "  2.0%  +84.00         0.433  0.0013     1.7",
            "equal_weight        -12.3%        -5.0%     10.0%   -0.50    -0.75  "
            " 25.0%   -0.20         0.013  0.0000    20.0",
        ]
    )
    assert text_table(STRATEGIES) == expected


def test_markdown_table_cells():
    lines = markdown_table(STRATEGIES).splitlines()
    assert lines[0] == "| strategy | " + " | ".join(m.label for m in M.shown_in(M.REPORT)) + " |"
    assert lines[1] == "|---|---|---|---|---|---|---|---|---|---|---|"
    assert lines[2] == "| sac | " + " | ".join(SAC_CELLS) + " |"
    assert lines[3] == "| equal_weight | " + " | ".join(EW_CELLS) + " |"
    assert len(lines) == 4


def test_metrics_frame_holds_the_raw_values_by_label():
    frame = metrics_frame(STRATEGIES)
    assert list(frame.index) == ["sac", "equal_weight"]
    assert list(frame.columns) == [m.label for m in M.shown_in(M.REPORT)]
    assert frame.loc["sac", "Sharpe"] == 4.20526 and frame.loc["equal_weight", "Max DD"] == 0.25


def test_nan_to_none_makes_values_json_safe():
    raw = {
        "a": float("nan"),
        "b": [math.inf, 1.0, np.float32(2.5)],
        "c": (np.int64(3), -np.inf, np.float64(0.25)),
        "d": {"e": np.float64("nan"), "f": "text", "g": None, "h": True},
    }
    out = nan_to_none(raw)
    assert out == {
        "a": None,
        "b": [None, 1.0, 2.5],
        "c": [3, None, 0.25],
        "d": {"e": None, "f": "text", "g": None, "h": True},
    }
    assert type(out["b"][2]) is float and type(out["c"][0]) is int  # numpy scalars become Python ones
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_write_report_writes_markdown_and_html_with_values_descriptions_and_plot_links(tmp_path):
    md_path, html_path = write_report(
        tmp_path,
        title="Backtest <test> & more",
        facts=["test split 2020-01-06 .. 2020-01-09", "costs 10 bp & daily rebalancing"],
        strategies=STRATEGIES,
        descriptions={"sac": "the agent", "equal_weight": "1/N, rebalanced <daily>"},
        plots={"Equity curves": "equity.png", "Drawdowns": "drawdowns.png"},
    )
    assert (md_path, html_path) == (tmp_path / "report.md", tmp_path / "report.html")
    md = md_path.read_text()
    assert md.startswith("# Backtest <test> & more\n\n- test split 2020-01-06 .. 2020-01-09\n")
    assert markdown_table(STRATEGIES) in md
    assert "- **sac**: the agent\n- **equal_weight**: 1/N, rebalanced <daily>\n" in md
    assert "### Equity curves\n\n![Equity curves](equity.png)\n" in md
    assert "![Drawdowns](drawdowns.png)" in md
    html = html_path.read_text()
    assert "<title>Backtest &lt;test&gt; &amp; more</title>" in html
    assert "<li>costs 10 bp &amp; daily rebalancing</li>" in html
    assert "<th>equal_weight</th>" in html and "<th>Turnover/day</th>" in html
    for cell in SAC_CELLS + EW_CELLS:
        assert f"<td>{cell}</td>" in html, cell
    assert "<li><b>equal_weight</b>: 1/N, rebalanced &lt;daily&gt;</li>" in html
    assert "<img src='equity.png' alt='Equity curves'>" in html
    assert "<img src='drawdowns.png' alt='Drawdowns'>" in html


def _png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def test_plots_are_png_files_of_the_figure_size(tmp_path):
    dates = pd.bdate_range("2020-01-06", periods=30)
    rng = np.random.default_rng(0)
    values = pd.DataFrame(
        np.cumprod(1 + rng.normal(0, 0.01, (30, 3)), axis=0),
        index=dates,
        columns=["sac", "equal_weight", "max_sharpe_lookahead"],
    )
    weights = pd.DataFrame(rng.dirichlet(np.ones(4), 30), index=dates, columns=["A", "B", "C", "cash"])
    history = [
        {"env_steps": s, "critic_loss": 1.0 / s, "entropy": 2.0 - s / 1000, "validation_sharpe": 0.1}
        for s in (100, 200, 300)
    ]
    # figure size (inches) x 110 dpi -> pixels (height, width)
    cases = [
        (plot_equity(values, tmp_path / "equity.png", "Equity"), (550, 1210)),
        (plot_drawdowns(values, tmp_path / "drawdowns.png"), (440, 1210)),
        (plot_weights(weights, tmp_path / "weights.png"), (550, 1210)),
        (plot_training(history, tmp_path / "training.png"), (418, 1430)),
        (plot_training([], tmp_path / "training_empty.png"), (418, 1430)),
    ]
    for path, (height, width) in cases:
        image = _png(path)
        assert image.shape[:2] == (height, width), path.name
        assert image[..., :3].std() > 0.05, path.name  # something was drawn, not a blank canvas


@pytest.fixture
def kept_figures(monkeypatch):
    """The figures the plot functions draw, kept open so a test can read what they show."""
    import trainer.evaluation.report as report

    figures = []
    monkeypatch.setattr(report.plt, "close", figures.append)
    yield figures
    monkeypatch.undo()
    report.plt.close("all")


def _legend_outside(fig) -> bool:
    fig.canvas.draw()
    ax, legend = fig.axes[0], fig.axes[0].get_legend()
    return legend is not None and legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_weights_plot_shows_top_holdings_other_and_cash_in_distinct_colours(tmp_path, kept_figures):
    dates = pd.bdate_range("2021-01-04", periods=40)
    rng = np.random.default_rng(5)
    tickers = [f"T{i:02d}" for i in range(20)]
    raw = rng.dirichlet(np.linspace(3.0, 0.2, 21), 40)  # larger weights for the first tickers
    weights = pd.DataFrame(raw, index=dates, columns=[*tickers, "cash"])
    shown = weights_for_plot(weights)
    ranked = weights[tickers].mean().sort_values(ascending=False).index[:TOP_HOLDINGS].tolist()
    assert list(shown.columns) == [*ranked, "other (12 assets)", "cash"]
    rest = [t for t in tickers if t not in ranked]
    np.testing.assert_allclose(shown["other (12 assets)"], weights[rest].sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(shown.sum(axis=1), 1.0, rtol=1e-12)

    plot_weights(weights, tmp_path / "weights.png")
    (fig,) = kept_figures
    ax = fig.axes[0]
    assert ax.get_ylabel() == "weight (fraction of portfolio value)" and ax.get_xlabel() == "date"
    colours = [tuple(np.round(c.get_facecolor()[0], 3)) for c in ax.collections]
    assert len(colours) == 10 and len(set(colours)) == 10  # 21 series before: three shared one blue
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(shown.columns)
    assert _legend_outside(fig)


def test_training_plot_marks_validation_only_where_a_pass_ran(tmp_path, kept_figures):
    sharpe = M.split_key(M.VALIDATION, M.SHARPE)
    history = [
        {M.ENV_STEPS: 100 * i, M.CRITIC_LOSS: 1.0 / i, M.ENTROPY: 1.0, sharpe: 0.1 * (i // 2), M.VALIDATED: i % 2 == 1}
        for i in range(1, 7)
    ]
    plot_training(history, tmp_path / "training.png")
    (fig,) = kept_figures
    critic, _, validation = fig.axes
    assert list(critic.lines[0].get_xdata()) == [100, 200, 300, 400, 500, 600]  # measured every iteration
    assert list(validation.lines[0].get_xdata()) == [100, 300, 500]  # passes at iterations 1, 3, 5 only
    assert all(ax.get_ylabel() and ax.get_xlabel() == "env steps" for ax in fig.axes)


def test_equity_and_drawdown_legends_sit_outside_the_data(tmp_path, kept_figures):
    dates = pd.bdate_range("2021-01-04", periods=30)
    cols = ["sac", "equal_weight", "min_volatility", "min_volatility_lookahead"]
    values = pd.DataFrame(np.cumprod(1 + np.random.default_rng(1).normal(0, 0.01, (30, 4)), axis=0), dates, cols)
    plot_equity(values, tmp_path / "equity.png", "test split")
    plot_drawdowns(values, tmp_path / "drawdowns.png")
    for fig in kept_figures:
        assert _legend_outside(fig)
        lines = {line.get_label(): line for line in fig.axes[0].lines}
        # a look-ahead variant: its model's colour, dashed; every other strategy its own colour
        assert lines["min_volatility_lookahead"].get_color() == lines["min_volatility"].get_color()
        assert lines["min_volatility_lookahead"].get_linestyle() == "--"
        assert len({lines[c].get_color() for c in cols[:3]}) == 3
    assert kept_figures[1].axes[0].get_ylabel() == "drawdown from the running peak (%)"
