"""Shared test fixtures, and the suite's hermeticity: no test touches the workspace's pipeline state.

The workspace may hold a user's own run (`make demo`, experiments, a deploy record), and a test that reads it
passes or fails with what is there; one that writes it destroys the user's work. So, for the whole session:
- the working directory is an empty temporary folder, so every relative default path (models/export,
  params.yaml, data/processed...) of a command or a stage points at nothing of the workspace;
- an audit hook refuses, in this process, any open of the workspace's STATE (read or write), naming the file;
- STATE is snapshotted (each file's size, mtime and inode) before and after, and any change, also by a
  subprocess, fails the session.
Tests that need a project make their own (tests/pipeline.py: make_project, clone_working_tree).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPORA = REPO.parent / "shared" / "corpora"

PIPELINES = ("dvc.yaml", "deploy/dvc.yaml")


def declared_outputs() -> set[str]:
    """The top folder (or file) of every output the pipelines declare, so a new stage's outputs are STATE too."""
    tops = set()
    for pipeline in PIPELINES:
        document = yaml.safe_load((REPO / pipeline).read_text()) if (REPO / pipeline).is_file() else None
        for stage in (document or {}).get("stages", {}).values():
            folder = os.path.join(os.path.dirname(pipeline), stage.get("wdir", "."))
            for entry in (entry for kind in ("outs", "metrics", "plots") for entry in stage.get(kind, [])):
                path = os.path.normpath(os.path.join(folder, entry if isinstance(entry, str) else next(iter(entry))))
                tops.add(path.split(os.sep)[0])
    return tops


# What the pipelines and the commands write in a workspace, and params.yaml (`dvc exp apply` rewrites it).
STATE = tuple(
    sorted(
        {"data", "models", "dvc_plots", "dvc.lock", "deploy/dvc.lock", "params.yaml", ".dvc/cache"} | declared_outputs()
    )
)
SOURCE_IN_STATE = ("data/demo",)  # tracked input data that tests may read (never write)


def is_state(path: str) -> bool:
    """Whether the absolute, normalised `path` is in the workspace's STATE (and not in SOURCE_IN_STATE)."""
    if not path.startswith(_REPO_PREFIX):
        return False
    relative = path[len(_REPO_PREFIX) :]

    def under(names: tuple[str, ...]) -> bool:
        return any(relative == name or relative.startswith(name + os.sep) for name in names)

    return under(STATE) and not under(SOURCE_IN_STATE)


_REPO_PREFIX = str(REPO) + os.sep
_guarding = False


def _refuse_opening_state(event: str, args: tuple) -> None:
    if event != "open" or not _guarding or isinstance(args[0], int):
        return
    path = os.path.normpath(os.path.abspath(os.fsdecode(args[0])))
    if is_state(path):
        raise PermissionError(f"a test opened the workspace's {os.path.relpath(path, REPO)}: use tmp_path instead")


sys.addaudithook(_refuse_opening_state)  # audit hooks cannot be removed: `_guarding` switches it


def snapshot_state() -> dict[str, tuple[int, int, int]]:
    """(size, mtime, inode) of every file and folder in the workspace's STATE."""
    seen = {}
    for name in STATE:
        top = REPO / name
        paths = [top] if top.is_file() else [top, *top.rglob("*")] if top.is_dir() else []
        for path in paths:
            stat = path.lstat()
            seen[path.relative_to(REPO).as_posix()] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return seen


@pytest.fixture(scope="session", autouse=True)
def hermetic(tmp_path_factory):
    """Run the session in an empty folder, refuse opens of the workspace's STATE, and fail if STATE changed."""
    global _guarding
    before = snapshot_state()
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    _guarding = True
    try:
        yield
    finally:
        _guarding = False
        os.chdir(cwd)
    after = snapshot_state()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"the tests changed the workspace's pipeline state: {changed[:20]}"


# Hypothesis' deadline (200 ms an example) is a timing assertion: on a busy machine it fails tests that are right
# (found in a random-order run). Speed is the benchmarks' business.
settings.register_profile("tweetbot", deadline=None)
settings.load_profile("tweetbot")


@pytest.fixture
def corpora() -> Path:
    """../shared/corpora, or a clean skip where it is not beside the repository."""
    if not SHARED_CORPORA.is_dir():
        pytest.skip("../shared/corpora is not beside the repository")
    return SHARED_CORPORA
