"""A decision as people and programs read it: the terminal table, ``decision.json`` and ``decision.md``.

``decision.json``: ``date`` (the decision date, the price file's last), ``holding_day`` (the next business day,
the first the new weights earn), ``tickers``, ``weights`` (``{ticker: w, ..., "cash": w}``: the portfolio traded
to on ``date``), ``current``, ``trades`` (weight changes, assets and cash), ``turnover``, ``expected_cost``
(fraction of value), ``cost_bps``, ``changed_by`` (what the action mapping, the no-trade band and partial
rebalancing, and the position limits each did), and with a value ``value``, ``notional`` and ``shares``;
``checkpoint`` (the checkpoint, or the ensemble's first), ``members`` and ``warnings``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from trainer.evaluation.decision import Decision
from trainer.evaluation.holdings import CASH, Holdings

WEIGHT_DECIMALS = 12  # JSON weights: rounded far below any trade size, so files compare cleanly


def _by_name(decision: Decision, values: np.ndarray) -> dict[str, float]:
    return {name: round(float(v), WEIGHT_DECIMALS) for name, v in zip([*decision.tickers, CASH], values, strict=True)}


def _changed(decision: Decision) -> dict[str, Any]:
    """What each stage after the action changed, in turnover (sum of |weight changes| over the assets)."""
    n = len(decision.tickers)

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a[:n] - b[:n]).sum())

    s = decision.settings
    return {
        "action_mapping": f"{s.get('action')}"
        + (f" around {s.get('tilt_reference')}" if s.get("action") == "tilt" else ""),
        "no_trade_band": {
            "setting": {"no_trade_band": s.get("no_trade_band"), "rebalance_fraction": s.get("rebalance_fraction")},
            "turnover_removed": distance(decision.mapped, decision.current)
            - distance(decision.banded, decision.current),
        },
        "limits": {
            "setting": {k: s.get(k) for k in ("max_weight", "max_cash", "max_turnover")},
            "weight_moved": distance(decision.target, decision.banded) + abs(decision.target[n] - decision.banded[n]),
        },
    }


def decision_json(decision: Decision, holdings: Holdings | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "date": str(decision.date.date()),
        "holding_day": str(decision.holding_day.date()),
        "tickers": decision.tickers,
        "weights": _by_name(decision, decision.target),
        "current": _by_name(decision, decision.current),
        "trades": _by_name(decision, decision.target - decision.current),
        "turnover": decision.turnover,
        "expected_cost": decision.expected_cost,
        "cost_bps": decision.cost_bps,
        "changed_by": _changed(decision),
        "policy_target": _by_name(decision, decision.mapped),
        "checkpoint": str(decision.members[0].checkpoint),
        "members": [{"checkpoint": str(m.checkpoint), "agent": m.agent} for m in decision.members],
        "holdings": holdings.source if holdings is not None else "all cash (no --holdings given)",
        "warnings": decision.warnings,
    }
    value = holdings.value if holdings is not None else None
    if value is not None:
        dw = decision.target - decision.current
        out["value"] = value
        out["notional"] = _by_name(decision, dw * value)
        out["shares"] = {
            t: float(dw[i] * value / p)
            for i, (t, p) in enumerate(zip(decision.tickers, decision.last_prices, strict=True))
        }
        out["expected_cost_amount"] = decision.expected_cost * value
    return out


def _rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name in [*result["tickers"], CASH]:
        w, now, dw = result["weights"][name], result["current"][name], result["trades"][name]
        if max(abs(w), abs(now)) < 5e-5 and name != CASH:
            continue
        row = [name, f"{now:.2%}", f"{w:.2%}", f"{dw:+.2%}"]
        if "notional" in result:
            shares = result["shares"].get(name)
            row += [f"{result['notional'][name]:+,.2f}", "" if shares is None else f"{shares:+,.2f}"]
        rows.append(row)
    return rows


def decision_text(result: dict[str, Any]) -> str:
    """The terminal table: held now, target, trade (and notional and shares with a value), then the totals."""
    header = ["asset", "held now", "target", "trade"] + (["notional", "shares"] if "notional" in result else [])
    rows = _rows(result)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    cost = f"{result['expected_cost']:.4%} of value" + (
        f" ({result['expected_cost_amount']:,.2f})" if "expected_cost_amount" in result else ""
    )
    lines += [
        f"turnover {result['turnover']:.4f} | expected cost at {result['cost_bps']:g} bp: {cost}",
        "(assets below 0.01% before and after are not listed)",
    ]
    return "\n".join(lines)


def decision_markdown(result: dict[str, Any], chosen: str) -> str:
    header = ["asset", "held now", "target", "trade"] + (["notional", "shares"] if "notional" in result else [])
    band, limits = result["changed_by"]["no_trade_band"], result["changed_by"]["limits"]
    lines = [
        f"# Decision for {result['date']} (held from {result['holding_day']})",
        "",
        f"- policy: {chosen}; checkpoint `{result['checkpoint']}`",
        f"- holdings: {result['holdings']}",
        f"- action mapping: {result['changed_by']['action_mapping']}",
        f"- no-trade band / partial rebalancing {band['setting']}: turnover removed {band['turnover_removed']:.4f}",
        f"- position limits {limits['setting']}: weight moved {limits['weight_moved']:.4f}",
        f"- turnover {result['turnover']:.4f}; expected cost {result['expected_cost']:.4%} of value at "
        f"{result['cost_bps']:g} bp",
        *(f"- WARNING: {w}" for w in result["warnings"]),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in _rows(result)),
        "",
    ]
    return "\n".join(lines)


def json_text(result: dict[str, Any], compact: bool = False) -> str:
    """``decision.json``'s text (finite numbers only), as written to the file (indented) and answered by the
    service (``compact``: no indentation, which lets Python's C encoder write it, 10x faster)."""
    if compact:
        return json.dumps(result, separators=(",", ":"), allow_nan=False, default=_finite)
    return json.dumps(result, indent=2, allow_nan=False, default=_finite)


def write_decision(result: dict[str, Any], chosen: str, json_path: Path, markdown_path: Path) -> None:
    """Write both files (their folders must exist: checked before the decision is made)."""
    json_path.write_text(json_text(result) + "\n")
    markdown_path.write_text(decision_markdown(result, chosen))


def _finite(x: Any) -> Any:
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"non-finite value {value} in a decision")
    return value
