"""The versions file and its table (tweetbot.history)."""

from __future__ import annotations

import subprocess

import pytest

from tests.pipeline import VENV_BIN
from tweetbot import history
from tweetbot.runtime.errors import UserError


def promoted(version: int, **extra) -> dict:
    row = {"event": "promoted", "version": version, "time": f"2026-01-0{version}T00:00:00Z", "newest_post_id": "9"}
    row |= {"new_posts": 50, "val_loss": 1.23456, "bundle": f"b{version}", "image_tag": f"t{version}"}
    return row | {"task_definition": f"arn:aws:ecs:us-east-1:1:task-definition/bot:{version}"} | extra


def test_the_table_marks_the_live_version_and_shortens_task_definitions(tmp_path):
    path = tmp_path / "history.jsonl"
    history.append(promoted(1), path)
    history.append(promoted(2), path)
    history.append({"event": "not_promoted", "version": None, "val_loss": 2.0, "live_val_loss": 1.5}, path)
    history.append({**promoted(1), "event": "rollback"}, path)
    rows = history.read(path)

    assert history.live(rows)["version"] == 1 and history.next_version(rows) == 3
    header, first, second, rejected, rollback = history.table(rows).splitlines()
    assert header.split()[:3] == ["version", "event", "time"]
    assert first.split()[:2] == ["1*", "promoted"] and "bot:1" in first.split() and "1.2346" in first.split()
    assert second.split()[:2] == ["2", "promoted"] and "bot:2" in second.split()
    assert rejected.split()[:2] == ["-", "not_promoted"] and "1.5000" in rejected.split()
    assert rollback.split()[:2] == ["1", "rollback"]
    lines = [header, first, second, rejected, rollback]
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # the columns line up


def test_no_versions_and_an_unknown_version(tmp_path):
    assert history.read(tmp_path / "none.jsonl") == [] and history.live([]) is None
    with pytest.raises(UserError, match=r"no version 3 .*versions: 1"):
        history.version([promoted(1)], 3)


def tweetbot(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "tweetbot"), *args], cwd=cwd, capture_output=True, text=True)


def test_the_history_and_rollback_commands(tmp_path):
    assert tweetbot(tmp_path, "history").stdout == "no versions yet: run `tweetbot update`\n"
    history.append(promoted(1), tmp_path / history.HISTORY)
    printed = tweetbot(tmp_path, "history").stdout.splitlines()
    assert printed[0].split()[0] == "version" and printed[1].split()[:2] == ["1*", "promoted"]

    unknown = tweetbot(tmp_path, "rollback", "3")
    assert (unknown.returncode, unknown.stderr) == (
        2,
        f"error: no version 3 in {history.HISTORY} (versions: 1): see `tweetbot history`\n",
    )
    assert tweetbot(tmp_path, "rollback", "1").stdout == "version 1 is already live\n"
