"""DVC from Python: its command line in a subprocess, and what `tweetbot update` reads of its cache and experiments."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tweetbot.runtime.errors import UserError


def dvc(*args: str) -> subprocess.CompletedProcess:
    """Run DVC with this venv first on PATH (the stage commands call `python`); a failure is one UserError line,
    with DVC's whole output on stderr above it."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    dvc_bin = shutil.which("dvc", path=bin_dir) or "dvc"
    result = subprocess.run([dvc_bin, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        print(result.stdout, result.stderr, sep="\n", file=sys.stderr)
        raise UserError(f"`dvc {' '.join(args)}` failed: {detail[0]}")
    return result


def run_experiment(name: str, settings: dict[str, object], staged: list[Path]) -> None:
    """`dvc exp run --temp` as experiment `name`, with params `settings` (`-S`); a leftover `name` is replaced.

    An experiment is made of what git tracks (DVC stashes the workspace's changes to run it), so the `staged`
    files, which git may not know yet (a dvc.lock never committed, a new .dvc file), are staged for the run."""
    if name in dvc("exp", "list", "--name-only").stdout.split():
        dvc("exp", "remove", name)
    options = [part for key, value in settings.items() for part in ("--set-param", f"{key}={value}")]
    _git("add", *map(str, staged))
    try:
        dvc("exp", "run", "--temp", "--name", name, *options)
    finally:
        _git("reset", "--quiet", "--", *map(str, staged))  # git's index as it was


@contextlib.contextmanager
def experiment_files(name: str, *paths: Path) -> Iterator[list[Path]]:
    """The outputs `paths` of experiment `name` (from the DVC cache), as files in a temporary folder."""
    import dvc.api as dvc_api

    with tempfile.TemporaryDirectory(prefix="tweetbot-experiment-") as scratch:
        copies = [Path(scratch) / f"{i}-{path.name}" for i, path in enumerate(paths)]
        for path, copy in zip(paths, copies, strict=True):
            copy.write_bytes(dvc_api.read(str(path), rev=name, mode="rb"))
        yield copies


def cached(md5: str) -> Path:
    """The file the DVC cache holds under `md5`."""
    from dvc.repo import Repo

    with Repo() as repo:
        path = Path(repo.cache.local.oid_to_path(md5))
    if not path.is_file():
        raise UserError(f"{md5} is not in the DVC cache: `dvc pull` the commit that recorded it")
    return path


def _git(*args: str) -> None:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(
            f"`git {' '.join(args)}` failed: {result.stderr.strip()}: DVC experiments need a git repository"
        )
