"""Throwaway copies of the project to run DVC in, made from the working tree and never from its pipeline state.

`source_tree()` is the working tree as one commit of a git repository of its own: tracked files as they are now
(uncommitted edits included) and untracked files git does not ignore, but not what the pipelines wrote there
(tests/conftest.py STATE, which is also where DVC leaves outputs git does not ignore, such as dvclive/). It is
made once per test session, by git and tar (the workspace is only read). `clone_working_tree` clones it, as a
user clones the repository; `make_project` copies the pipeline's files out of it.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import REPO, STATE

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


@functools.cache
def source_tree() -> Path:
    """A git repository holding the working tree's source as one commit (see the module's docstring)."""
    root = Path(tempfile.mkdtemp(prefix="tweetbot-source-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    tracked = set(workspace_files())

    def is_source(name: str) -> bool:
        in_state = any(name == top or name.startswith(top + "/") for top in STATE)
        return os.path.lexists(REPO / name) and (name in tracked or not in_state)

    untracked = workspace_files("--others", "--exclude-standard")
    names = sorted(name for name in [*tracked, *untracked] if is_source(name))
    packed = subprocess.run(
        ["tar", "-c", "-C", str(REPO), "--null", "-T", "-"], input="\0".join(names).encode(), capture_output=True
    )
    assert packed.returncode == 0, packed.stderr.decode()
    subprocess.run(["tar", "-x", "-C", str(root)], input=packed.stdout, check=True)
    run(root, "git", "init", "-q")
    run(root, "git", "add", "-A", "--force")  # exactly the files listed above, ignored-but-tracked ones too
    run(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "the working tree")
    return root


def workspace_files(*options: str) -> list[str]:
    """`git ls-files` of the workspace: its tracked files, or with `options` others."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", *options], capture_output=True, check=True)
    return [name for name in os.fsdecode(listed.stdout).split("\0") if name]


def clone_working_tree(dest: Path) -> Path:
    """`git clone` of the working tree (source_tree) at `dest`, with ../shared beside it as in the workspace."""
    run(dest.parent, "git", "clone", "-q", str(source_tree()), str(dest))
    shared = dest.parent / "shared"
    if (REPO.parent / "shared").is_dir() and not shared.exists():
        shared.symlink_to(REPO.parent / "shared")
    return dest


def make_project(root: Path) -> Path:
    """Copy what the pipeline needs into `root` and make it a git repository with DVC."""
    source = source_tree()
    for name in PROJECT_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (source / name).exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, root / name)
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
