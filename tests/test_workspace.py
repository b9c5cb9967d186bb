"""The workspace's paths are named once (tweetbot.workspace): the pipelines pass the stages those same paths."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from tests.conftest import REPO
from tweetbot import workspace


def test_every_path_a_stage_command_takes_is_a_workspace_path():
    named = {str(value) for value in vars(workspace).values() if isinstance(value, Path)}
    for pipeline in (REPO / "dvc.yaml", REPO / "deploy" / "dvc.yaml"):
        for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
            paths = shlex.split(stage["cmd"])[2:]  # `python stages/NAME.py PATH...`
            assert paths and set(paths) <= named, f"{pipeline.name} {name}: {set(paths) - named} not in workspace.py"
