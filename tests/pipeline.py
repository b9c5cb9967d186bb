"""A throwaway copy of the project to run DVC in: git init, the pipeline files, the demo data."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO

VENV_BIN = REPO / ".venv" / "bin"
UP_TO_DATE = "Data and pipelines are up to date."  # what `dvc status` says when nothing would run
PROJECT_FILES = [
    "dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvcignore",
    "stages",
    "src",
    "service",
    "deploy",
    "data/demo",
]


def make_project(root: Path) -> Path:
    """Copy what the pipeline needs into `root` and make it a git repository with DVC."""
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    run(root, "git", "init", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return root


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=root, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(root, str(VENV_BIN / "dvc"), *args, check=check)


def stages_run(result: subprocess.CompletedProcess) -> list[str]:
    """The names of the stages a `dvc repro` ran, in order."""
    return [line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage '")]
