"""The project's import graph, read from the source (nothing is imported): which of its own files a script runs."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

# Where each top-level package of the project lives (pyproject.toml's pythonpath and hatch packages).
PACKAGES = {"tweetbot": REPO / "src", "service": REPO, "deploy": REPO, "stages": REPO}


def module_file(name: str) -> Path | None:
    """The file of project module `name` (a package's __init__.py), or None for a module of another project."""
    root = PACKAGES.get(name.split(".")[0])
    if root is None:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The project modules `path` imports: at module level, or anywhere (deferred imports run too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from package import module` imports the module; `from module import name` only the module
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            if module_file(".".join(parts[:depth])) is not None:
                found.add(".".join(parts[:depth]))
    return found


def files_run_by(script: Path) -> set[Path]:
    """Every project file that running `script` can execute: the script and its imports, transitively."""
    seen: set[Path] = set()
    todo = [script.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(name).resolve() for name in imported_modules(path))
    return seen
