"""Experiment files: loading YAML (``tune_configs/<name>.yaml`` or a path), ``--set`` overrides, validation.

Every error names the file and the key (``ExperimentError``); a sweep's every producible config is validated
as the experiment it would be, before any trial starts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from envs.data import TEST
from envs.folds import CONFIG_DIR, resolve_experiment_path
from trainer.experiment.config import GRID_DOMAINS, Experiment
from trainer.experiment.schema import ExperimentError

__all__ = [
    "CONFIG_DIR",
    "ExperimentError",
    "apply_overrides",
    "available_experiments",
    "experiment_from_dict",
    "load_experiment",
    "load_raw",
    "parse_override",
    "parse_yaml",
    "resolve_experiment_path",
]


def _format_validation_error(where: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem(s))" if more else ""
    msg = first["msg"]
    if not first["loc"]:  # a rule across sections names its keys itself
        return f"{where}: {msg.removeprefix('Value error, ')}{tail}"
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see tune_configs/README.md for the schema)"
    return f"{where}: key '{key}': {msg}{tail}"


def experiment_from_dict(raw: dict[str, Any], where: str = "experiment") -> Experiment:
    """Validate a raw dict; errors name ``where`` and the dotted key."""
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        raise ExperimentError(_format_validation_error(where, exc)) from None


def available_experiments() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _bad_date(text: str) -> str:
    """Where and why a YAML text holds a date-like value that is no real date (PyYAML raises a bare ValueError)."""
    constructor = yaml.constructor.SafeConstructor()
    stack = [yaml.compose(text, Loader=yaml.SafeLoader)]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            stack.extend(v for kv in node.value for v in kv)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:timestamp":
            try:
                constructor.construct_yaml_timestamp(node)
            except ValueError as exc:
                return f"at line {node.start_mark.line + 1}: {node.value!r} is not a real date ({exc})"
    return "a value that looks like a date is not a real date"


_DATE_FIX = "write a real date as YYYY-MM-DD, or quote the value if it is not a date"


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with one-line errors that name ``where`` (a file, or ``--set key=value``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ExperimentError(f"{where}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    except ValueError:  # a date-like scalar such as 2020-13-01
        raise ExperimentError(f"{where}: {_bad_date(text)}; {_DATE_FIX}") from None


def load_raw(name_or_path: str) -> tuple[dict[str, Any], Path]:
    """The experiment file's raw mapping and its path; errors name the file."""
    path = resolve_experiment_path(name_or_path)
    if not path.exists():
        raise ExperimentError(
            f"{path}: experiment not found; available: {', '.join(available_experiments())} (or a .yaml path)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ExperimentError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the "
            "experiment file with UTF-8 encoding"
        ) from None
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read the experiment file ({exc.strerror or exc})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    return raw, path


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-parsed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or "" in key.strip().split("."):
        raise ExperimentError(f"--set {text!r}: expected key=value, e.g. --set sac.batch_size=128")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value  # not YAML: the plain string (the schema says whether a string fits)
    except ValueError:  # a date-like value such as 2020-13-01
        raise ExperimentError(f"--set {text}: {_bad_date(value)}; {_DATE_FIX}") from None
    return key.strip(), parsed


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a (copied) raw mapping."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ExperimentError(f"--set {dotted}: '{part}' is not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _validate_sweep(raw: dict[str, Any], exp: Experiment, where: str) -> None:
    """Validate every config the sweep can produce, as the experiment it would be, before any trial starts.

    First each swept key alone (the message names the key and its value), then every combination of them
    (``SweepConfig.points``: e.g. a batch size from one key larger than a buffer size from another).
    Errors name ``where`` (the file, and the command-line overrides applied to it).
    """
    sweep = exp.sweep
    for name, overrides in sweep.variants.items():
        try:
            experiment_from_dict(apply_overrides(raw, overrides), where=where)
        except ExperimentError as exc:
            detail = str(exc).removeprefix(f"{where}: ")
            raise ExperimentError(f"{where}: key 'sweep.variants.{name}': {detail}") from None
    domains = sweep.domains()
    for key, values in sweep.extremes().items():
        kind = domains[key][0]
        what = "value" if kind in GRID_DOMAINS else ("randint value" if kind == "randint" else f"{kind} bound")
        for value in values:
            try:
                experiment_from_dict(apply_overrides(raw, {key: value}), where=where)
            except ExperimentError as exc:
                detail = str(exc).removeprefix(f"{where}: ")
                raise ExperimentError(
                    f"{where}: key 'sweep.search_space.{key}': {what} {value!r} is invalid ({detail})"
                ) from None
    variants = list(sweep.variants.values()) or [{}]
    if len(domains) + (len(variants) > 1) < 2:
        return
    for point in (v | p for v in variants for p in sweep.points()):
        try:
            experiment_from_dict(apply_overrides(raw, point), where=where)
        except ExperimentError as exc:
            detail = str(exc).removeprefix(f"{where}: ")
            combo = ", ".join(f"{k}={v!r}" for k, v in point.items())
            raise ExperimentError(
                f"{where}: key 'sweep.search_space': the combination {combo} is invalid ({detail}); change the "
                "search space so that no trial gets it"
            ) from None


def load_experiment(name_or_path: str, overrides: dict[str, Any] | None = None, sweep: bool = True) -> Experiment:
    """Load ``tune_configs/<name>.yaml`` (or a path), apply ``--set`` overrides, validate.

    Every config the sweep's search space can produce is validated too (see ``_validate_sweep``). With
    ``sweep=False`` (one training run: ``trainer.train``) the file's ``sweep`` section is left out, so a sweep
    setting that does not fit the run's own budget (an ASHA grace period above ``--steps``) is no error.
    """
    raw, path = load_raw(name_or_path)
    where = str(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
        # values from the command line (--set, --data, --steps, ...) are not the file's: the message says both
        where += " with " + ", ".join(f"{key}={value}" for key, value in overrides.items()) + " from the command line"
    if not sweep:
        raw = {k: v for k, v in raw.items() if k != "sweep"}
    exp = experiment_from_dict(raw, where=where)
    if sweep and exp.data.split_dates is not None and TEST not in exp.data.split_dates:
        raise ExperimentError(
            f"{where}: key 'data.split_dates': a sweep backtests every trial on its test window; give test dates "
            "too (train and validation only are for one trainer.train run)"
        )
    _validate_sweep(raw, exp, where)
    return exp
