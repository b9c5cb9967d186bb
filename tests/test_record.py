"""The pipeline's record (tweetbot.record): a snapshot put back restores dvc.lock, params and data together."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.pipeline import UP_TO_DATE, dvc, make_project, stages_run
from tweetbot import record
from tweetbot import update as updating
from tweetbot.runtime.errors import UserError


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = make_project(tmp_path / "project")
    dvc(root, "repro", "preprocess")
    monkeypatch.chdir(root)
    return root


def set_val_fraction(root, value: float) -> None:
    document = yaml.safe_load((root / "params.yaml").read_text())
    document["preprocess"]["val_fraction"] = value
    (root / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def test_a_snapshot_put_back_restores_the_record_and_the_data_it_names(project):
    saved = record.snapshot()
    assert {"params.yaml", "dvc.lock", "data/processed/stats.json"} <= set(saved)
    val = (project / "data/processed/val.npy").read_bytes()

    set_val_fraction(project, 0.3)
    assert stages_run(dvc(project, "repro", "preprocess")) == ["preprocess"]
    (project / "models").mkdir()
    (project / "models/extra.bin").write_bytes(b"added after the snapshot")
    dvc(project, "add", "models/extra.bin")
    assert record.snapshot() != saved

    record.restore(saved)
    assert record.snapshot() == saved
    assert (project / "data/processed/val.npy").read_bytes() == val
    assert not (project / "models/extra.bin").exists()  # its .dvc file was not in the record, so it goes too
    assert dvc(project, "status", "preprocess").stdout.strip() == UP_TO_DATE


def test_a_snapshot_keeps_the_line_ends_of_the_files_dvc_lock_hashes(project):
    stats = project / "data/processed/stats.json"
    crlf = stats.read_bytes().replace(b"\n", b"\r\n")  # as the csv module writes a plot's rows
    stats.write_bytes(crlf)
    saved = record.snapshot()
    stats.write_text("{}")
    record.restore(saved)
    assert stats.read_bytes() == crlf


def test_keeping_takes_one_stage_and_params_sections_from_the_current_record(project):
    saved = record.snapshot()
    set_val_fraction(project, 0.3)
    dvc(project, "repro", "preprocess")
    current = record.snapshot()

    merged = record.keeping(saved, current, stages=("preprocess",), sections=("preprocess",))
    assert merged["data/processed/stats.json"] == current["data/processed/stats.json"]
    lock, saved_lock, current_lock = (yaml.safe_load(text["dvc.lock"]) for text in (merged, saved, current))
    assert lock["stages"]["preprocess"] == current_lock["stages"]["preprocess"]
    assert lock["stages"]["fetch"] == saved_lock["stages"]["fetch"]
    assert yaml.safe_load(merged["params.yaml"])["preprocess"]["val_fraction"] == 0.3
    assert "# Hyper-parameters" in merged["params.yaml"]  # comments kept

    record.restore(merged)
    assert dvc(project, "status", "preprocess").stdout.strip() == UP_TO_DATE


def test_data_missing_from_the_cache_without_a_remote_is_one_clear_error(project):
    saved = record.snapshot()
    lock = yaml.safe_load(saved["dvc.lock"])
    (train,) = [out for out in lock["stages"]["preprocess"]["outs"] if out["path"] == "data/processed/train.npy"]
    train["md5"] = "0" * 32  # data this cache never held
    saved["dvc.lock"] = yaml.safe_dump(lock, sort_keys=False)
    with pytest.raises(UserError, match="the DVC cache lacks data that dvc.lock names"):
        record.restore(saved)


def test_the_record_before_an_update_is_kept_until_the_history_changes(project):
    before = updating.record_before_update()
    set_val_fraction(project, 0.3)  # a killed update got this far
    assert updating.record_before_update() == before  # its re-run puts back the record from before it

    updating.history.append({"event": "rollback", "version": 1})  # meanwhile: a rollback
    fresh = updating.record_before_update()
    assert fresh != before and yaml.safe_load(fresh["params.yaml"])["preprocess"]["val_fraction"] == 0.3
    assert json.loads(updating.BEFORE.read_text())["record"] == fresh


def test_data_missing_from_the_cache_comes_from_the_dvc_remote(project, tmp_path):
    saved = record.snapshot()
    val = (project / "data/processed/val.npy").read_bytes()
    dvc(project, "remote", "add", "--default", "store", str(tmp_path / "remote"))
    dvc(project, "push")
    set_val_fraction(project, 0.3)
    dvc(project, "repro", "preprocess")
    dvc(project, "gc", "--workspace", "--force")  # the cache keeps only what the workspace now names

    record.restore(saved)
    assert (project / "data/processed/val.npy").read_bytes() == val
    assert dvc(project, "status", "preprocess").stdout.strip() == UP_TO_DATE
