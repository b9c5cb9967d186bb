"""A kill -9 of the train stage at any instant, then a resume, leaves the files an uninterrupted run leaves.

The process killed is the real stage, `python stages/train.py ...` (a tiny model, 20 steps, checkpoints at steps
10 and 20). tests/faults/sitecustomize.py, on the child's PYTHONPATH, numbers its write points (a file opened for
writing, a rename, a deletion) and SIGKILLs it at the one a test names, before it or half-way through its first
write. Each killed run is resumed by running the stage again; its checkpoints (arrays bit for bit, and meta),
curves, metrics and file listing must equal an uninterrupted run's, all but the two wall-clock measurements
(`train_seconds`, `chars_per_second`): training is deterministic.

The default suite kills at the window issue 14 found (between the two checkpoint writes of an evaluation); the
slow tests kill at every write point of a run, at every write point of a resume, and at random instants.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from flax import serialization

from tests.conftest import REPO
from tests.trainkit import TINY_YAML, TRAIN_STAGE, params_yaml, write_data
from tweetbot import checkpoint

FAULTS = REPO / "tests" / "faults"  # holds the sitecustomize.py that injects the kills
TIMED = ("train_seconds", "chars_per_second")  # measured wall-clock time: the only values a resume may change
RANDOM_KILLS = 5


@dataclass(frozen=True)
class Point:
    """A write point of a run, as the child's trace names it."""

    index: int
    kind: str  # open | replace | unlink | rmtree
    path: str

    def kills(self) -> list[str]:
        """The ways to die at this point: before it, and half-way through the write of a file opened for it."""
        return ["before", "torn"] if self.kind == "open" else ["before"]


class Stage:
    """The train stage, run in fresh copies of one tiny project; its compiled programs cached across runs."""

    def __init__(self, root: Path):
        self.root = root
        self.template = root / "project"
        write_data(self.template / "data" / "processed")
        (self.template / "params.yaml").write_text(params_yaml(**TINY_YAML, max_steps=20))
        path = [str(FAULTS), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(path),
            "JAX_COMPILATION_CACHE_DIR": str(root / "jax-cache"),  # a run here is mostly compilation
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        }
        self._names = itertools.count()

    def project(self, like: Path | None = None) -> Path:
        """A new copy of the tiny project, or of the folder `like` (a killed run's leftovers)."""
        folder = self.root / f"run{next(self._names)}"
        shutil.copytree(like or self.template, folder)
        return folder

    def popen(self, folder: Path, **faults: str) -> subprocess.Popen:
        env = {**self.env, **{f"TWEETBOT_FAULTS_{name.upper()}": value for name, value in faults.items()}}
        return subprocess.Popen(TRAIN_STAGE, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, folder: Path, **faults: str) -> tuple[int, str]:
        process = self.popen(folder, **faults)
        _, stderr = process.communicate(timeout=300)
        return process.returncode, stderr.decode(errors="replace")

    def kill(self, folder: Path, point: Point, when: str) -> None:
        returncode, stderr = self.run(folder, kill=f"{point.index}:{when}")
        assert returncode == -signal.SIGKILL, f"not killed {when} {point} (exit {returncode}):\n{stderr}"

    def resume(self, folder: Path) -> dict:
        returncode, stderr = self.run(folder)
        assert returncode == 0, stderr
        return outcome(folder)

    def trace(self, folder: Path) -> list[Point]:
        """Run the stage to its end in `folder`, noting its write points."""
        trace = self.root / f"{folder.name}.trace"
        returncode, stderr = self.run(folder, trace=str(trace))
        assert returncode == 0, stderr
        lines = [line.split(" ", 2) for line in trace.read_text().splitlines()]
        return [Point(int(index), kind, path) for index, kind, path in lines]


def outcome(folder: Path) -> dict:
    """What a run leaves: its files' names, each checkpoint's meta and a hash of its arrays, the curves and the
    metrics; all but the measured times."""
    found: dict = {
        "files": sorted(
            path.relative_to(folder).as_posix()
            for area in ("models", "dvclive")
            for path in (folder / area).rglob("*")
            if path.is_file()
        )
    }
    for name in (checkpoint.BEST, checkpoint.LAST):
        if (path := folder / "models" / "checkpoints" / name).is_file():
            record = checkpoint.read(path)
            meta = untimed(record.pop("meta"))
            found[name] = meta, hashlib.sha256(serialization.msgpack_serialize(record)).hexdigest()
    for path in sorted((folder / "dvclive").rglob("*.tsv")):
        found[path.name] = path.read_text()
    if (metrics := folder / "dvclive" / "metrics.json").is_file():
        found["metrics.json"] = untimed(json.loads(metrics.read_text()))
    return found


def untimed(values: dict) -> dict:
    return {key: value for key, value in values.items() if key not in TIMED}


@dataclass(frozen=True)
class Reference:
    outcome: dict
    points: list[Point]

    def checkpoint_writes(self) -> list[Point]:
        return [point for point in self.points if point.kind == "replace" and point.path.endswith(".msgpack")]


@pytest.fixture(scope="module")
def stage(tmp_path_factory) -> Stage:
    return Stage(tmp_path_factory.mktemp("train-faults"))


@pytest.fixture(scope="module")
def reference(stage) -> Reference:
    """An uninterrupted run: what it leaves and its write points."""
    folder = stage.project()
    points = stage.trace(folder)
    return Reference(outcome(folder), points)


def test_a_kill_between_the_two_checkpoint_writes_resumes_to_the_same_files(stage, reference):
    """Issue 14: `last.msgpack` was written first, so a kill before `best.msgpack` resumed from a `last` that
    believed the new best saved, and `best.msgpack` stayed stale for good."""
    writes = reference.checkpoint_writes()
    assert len(writes) == 4, f"expected best and last at steps 10 and 20 (val loss falling): {writes}"
    folder = stage.project()
    stage.kill(folder, writes[3], "before")  # the step-20 evaluation: its first checkpoint written, not the other
    assert stage.resume(folder) == reference.outcome


def resumes_after(stage: Stage, reference: Reference, kills: list[tuple[Path, Point, str]]) -> list[str]:
    """Kill the stage in each folder at each point, resume it; the kills whose resume differs."""
    differing = []
    for folder, point, when in kills:
        stage.kill(folder, point, when)
        found, expected = stage.resume(folder), reference.outcome
        if found != expected:
            keys = sorted(key for key in found.keys() | expected.keys() if found.get(key) != expected.get(key))
            differing.append(f"killed {when} {point}: {keys} differ")
    print(f"{len(kills)} kills, {len(kills)} resumes, {len(kills) - len(differing)} identical")
    return differing


@pytest.mark.slow  # two runs per kill, about 40 kills: minutes
def test_a_kill_at_any_write_point_resumes_to_the_same_files(stage, reference):
    kills = [(stage.project(), point, when) for point in reference.points for when in point.kills()]
    assert not resumes_after(stage, reference, kills)


@pytest.mark.slow
def test_a_kill_at_any_write_point_of_a_resume_resumes_to_the_same_files(stage, reference):
    """A resume writes too (it rewinds DVCLive's files, then logs again): a kill there must lose nothing."""
    killed = stage.project()
    stage.kill(killed, reference.checkpoint_writes()[3], "before")
    resume_points = stage.trace(stage.project(like=killed))
    kills = [(stage.project(like=killed), point, when) for point in resume_points for when in point.kills()]
    assert not resumes_after(stage, reference, kills)


@pytest.mark.slow
def test_a_kill_at_random_instants_resumes_to_the_same_files(stage, reference):
    """SIGKILL from outside, at instants drawn over a whole run (pytest-randomly seeds `random`: its seed, in the
    header, draws them again)."""
    folder, started = stage.project(), time.monotonic()
    assert stage.resume(folder) == reference.outcome  # a second uninterrupted run: training is deterministic
    seconds = time.monotonic() - started
    differing, finished_first = [], 0
    for delay in sorted(random.uniform(0, seconds) for _ in range(RANDOM_KILLS)):
        folder = stage.project()
        process = stage.popen(folder)
        time.sleep(delay)
        process.kill()
        process.communicate()
        finished_first += process.returncode == 0
        if (found := stage.resume(folder)) != reference.outcome:
            differing.append(f"killed after {delay:.2f} s: {found}")
    print(
        f"{RANDOM_KILLS} kills at random instants (of a {seconds:.1f} s run; {finished_first} finished first), "
        f"{RANDOM_KILLS} resumes, {RANDOM_KILLS - len(differing)} identical"
    )
    assert not differing
