"""The train stage as DVC runs it: a subprocess, killed and resumed; one-line errors; `dvc exp run -S`."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.pipeline import dvc
from tests.pipeline import run as git
from tests.trainkit import TINY_YAML, TRAIN_STAGE, params_yaml, write_data
from tweetbot import checkpoint


@pytest.fixture
def workdir(tmp_path):
    write_data(tmp_path / "data" / "processed")
    return tmp_path


def stage(workdir: Path, **params) -> subprocess.CompletedProcess:
    (workdir / "params.yaml").write_text(params_yaml(**TINY_YAML, **params))
    return subprocess.run(TRAIN_STAGE, cwd=workdir, capture_output=True, text=True, timeout=300)


def test_killed_run_resumes_from_its_last_checkpoint(workdir):
    (workdir / "params.yaml").write_text(params_yaml(**TINY_YAML, max_steps=100_000))
    last = workdir / "models" / "checkpoints" / checkpoint.LAST
    process = subprocess.Popen(TRAIN_STAGE, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.kill()  # SIGKILL: no clean-up runs
    process.wait()
    assert last.exists(), "the run wrote no checkpoint before the deadline"
    killed_at = checkpoint.read(last)["meta"]["step"]  # a whole checkpoint, never a torn one

    resumed = stage(workdir, max_steps=killed_at + 20)  # a longer max_steps is still the same run
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from models/checkpoints/last.msgpack at step {killed_at}" in resumed.stdout
    assert checkpoint.read(last)["meta"]["step"] == killed_at + 20
    metrics = json.loads((workdir / "dvclive" / "metrics.json").read_text())
    assert metrics["steps"] == killed_at + 20


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The last line of stderr (below the progress bar), checked: exit status 2, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.rstrip("\n").split("\n")[-1]
    assert last.startswith("error: "), result.stderr
    return last


def test_unknown_param_is_one_line(workdir):
    assert "did you mean `rnn_size`" in one_line_error(stage(workdir, rnn_sise=12))


def test_diverging_run_is_one_line(workdir):
    error = one_line_error(stage(workdir, max_steps=20, learning_rate=".inf"))
    assert "the loss became nan by step 10" in error and "lower learning_rate" in error


@pytest.mark.slow  # git + dvc + a training subprocess: 10 s on a quiet machine, a minute on a busy one
def test_dvc_exp_run_sets_a_train_param(tmp_path):
    """`dvc exp run -S train.rnn_size=...` in a throwaway repository with the real stage definition."""
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"train": pipeline["stages"]["train"]}, "plots": pipeline["plots"]})
    )
    for folder in ("stages", "src"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_data(tmp_path / "data" / "processed")
    (tmp_path / "params.yaml").write_text(params_yaml(**TINY_YAML, max_steps=20))
    git(tmp_path, "git", "init", "-q")
    dvc(tmp_path, "init", "-q")
    git(tmp_path, "git", "add", "-A")
    git(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny project")

    dvc(tmp_path, "exp", "run", "-S", "train.rnn_size=12", "--name", "wider")
    shown = json.loads(dvc(tmp_path, "exp", "show", "--json").stdout)
    experiments = {
        exp["name"]: exp["revs"][0]["data"]
        for row in shown
        for exp in (row.get("experiments") or [])
        if exp.get("name")
    }
    assert "wider" in experiments
    data = experiments["wider"]
    assert data["params"]["params.yaml"]["data"]["train"]["rnn_size"] == 12
    val_loss = data["metrics"]["dvclive/metrics.json"]["data"]["val_loss"]
    assert 0 < val_loss < 10
