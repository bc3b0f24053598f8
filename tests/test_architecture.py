"""The house's rules, checked on the source: the allowed import directions between the parts, no import
cycle, and no module over the size limit (docs/architecture.md states them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "trainer", "benchmarks")
MAX_LINES = 450  # "about 400" lines, 450 at most

COMMANDS = "trainer (commands)"
# part -> the parts it may import (besides itself). ``trainer`` alone (the package) is importable from anywhere.
ALLOWED: dict[str, set[str]] = {
    "envs": set(),
    "trainer.metrics": set(),
    "trainer.runtime": {"trainer.metrics"},
    "trainer.experiment": {"envs", "trainer.metrics", "trainer.runtime"},
    "trainer.evaluation": {"envs", "trainer.metrics", "trainer.runtime", "trainer.experiment"},
    "trainer.rl": {"envs", "trainer.metrics", "trainer.runtime", "trainer.experiment", "trainer.evaluation"},
    COMMANDS: {"envs", "trainer.metrics", "trainer.runtime", "trainer.experiment", "trainer.evaluation", "trainer.rl"},
    "benchmarks": {
        "envs",
        "trainer.metrics",
        "trainer.runtime",
        "trainer.experiment",
        "trainer.evaluation",
        "trainer.rl",
        COMMANDS,
    },
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports, at module level, inside functions or under a ``__main__`` guard."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def part_of(module: str) -> str:
    if module.startswith(("envs", "benchmarks")):
        return module.split(".")[0]
    parts = module.split(".")
    if len(parts) >= 2 and f"trainer.{parts[1]}" in ALLOWED:
        return f"trainer.{parts[1]}"
    return COMMANDS  # trainer/<command>.py


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_imports_follow_the_allowed_directions() -> None:
    wrong = []
    for module, deps in sorted(graph().items()):
        if module == "trainer":
            continue  # the package itself: process settings only (checked below)
        src = part_of(module)
        for dep in sorted(deps):
            if dep == "trainer":
                continue
            dst = part_of(dep)
            if dst == src and src == COMMANDS:
                wrong.append(f"{module} -> {dep}: a command never imports another command")
            elif dst != src and dst not in ALLOWED[src]:
                wrong.append(f"{module} -> {dep}: {src} may not import {dst}")
    assert wrong == []


def test_the_trainer_package_imports_only_the_process_settings() -> None:
    assert graph()["trainer"] <= {"trainer.runtime.threads", "trainer.runtime"}


def test_no_import_cycle() -> None:
    g = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g[node]):
            if dep == "trainer" or dep in ("envs", "benchmarks"):
                continue  # a package's __init__ is imported with any of its modules; its own imports are checked
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            dfs(node)
    assert cycles == []


def test_the_checker_sees_a_wrong_direction_and_a_cycle(tmp_path: Path) -> None:
    # the checks above are only as good as this parser: a function-level import and a relative import count
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from trainer.rl import learner\nfrom .stats import x\n")
    modules = {"trainer.rl.learner": src, "trainer.evaluation.stats": src, "trainer.evaluation.m": src}
    src.rename(tmp_path / "trainer_evaluation_m.py")
    path = tmp_path / "trainer" / "evaluation" / "m.py"
    path.parent.mkdir(parents=True)
    path.write_text("def f():\n    from trainer.rl import learner\nfrom .stats import x\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert imports_of(path, modules) == {"trainer.rl.learner", "trainer.evaluation.stats"}
    finally:
        ROOT = saved
    assert "trainer.rl" not in ALLOWED[part_of("trainer.evaluation.m")]


@pytest.mark.parametrize("name", sorted(all_modules()))
def test_module_size(name: str) -> None:
    lines = len(all_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by responsibility (about 400 at most)"
