"""The fetch -> preprocess pipeline through DVC, in a throwaway git repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.pipeline import dvc, make_project, stages_run


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("project"))
    first = dvc(root, "repro", "preprocess")
    assert stages_run(first) == ["fetch", "preprocess"]
    return root


def test_demo_data_flows_to_encoded_splits(project):
    posts = [json.loads(line) for line in (project / "data/raw/tweets.jsonl").read_text().splitlines()]
    assert len(posts) > 3000 and all(post["source"] == "demo" for post in posts)
    stats = json.loads((project / "data/processed/stats.json").read_text())
    train, val = (np.load(project / f"data/processed/{split}.npy") for split in ("train", "val"))
    assert stats["train_chars"] > 5 * stats["val_chars"] > 0
    assert len(train) > len(val) > 0


def test_second_repro_does_nothing(project):
    again = dvc(project, "repro", "preprocess")
    assert stages_run(again) == []
    assert "up to date" in again.stdout


def test_a_preprocess_param_reruns_preprocess_only(project, tmp_path):
    project = Path(shutil.copytree(project, tmp_path / "project", symlinks=True))  # the other tests read the first
    params_file = project / "params.yaml"
    document = yaml.safe_load(params_file.read_text())
    document["preprocess"]["val_fraction"] = 0.2
    params_file.write_text(yaml.safe_dump(document, sort_keys=False))
    changed = dvc(project, "repro", "preprocess")
    assert stages_run(changed) == ["preprocess"]
    status = dvc(project, "status", "preprocess")
    assert "up to date" in status.stdout
