"""The deploy stage script, `tweetbot plan` and `tweetbot destroy` as a user runs them, on moto."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.aws import FAKE_AWS_ENV, NO_AWS_ENV, counting_session, layer, moto_server, write_image
from tests.conftest import REPO

TWEETBOT = REPO / ".venv" / "bin" / "tweetbot"
NAMES = (f"cli{number}" for number in itertools.count())


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        os.environ["MOTO_ECS_SERVICE_RUNNING"] = "1"
        yield url


@pytest.fixture
def project(tmp_path, moto_url):
    """A folder with params.yaml (a deploy name of its own) and a built image, as `dvc repro` leaves it."""
    name = next(NAMES)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"deploy": {"name": name}}))
    write_image(tmp_path / "build", [layer({"app/a.txt": b"a" * 5000}), layer({"app/b.txt": b"b"})])
    return tmp_path, name


def run(cwd, *args, env=None, stdin=""):
    return subprocess.run(args, cwd=cwd, env=env or os.environ, input=stdin, capture_output=True, text=True)


def stage(cwd):
    script = REPO / "stages" / "deploy_stage.py"
    return run(cwd, sys.executable, str(script), "build/image", "build/image.json", "build/deploy.json")


def repositories() -> set[str]:
    session, _ = counting_session()
    return {
        repository["repositoryName"] for repository in session.client("ecr").describe_repositories()["repositories"]
    }


def test_the_stage_deploys_then_a_second_run_changes_nothing(project):
    cwd, name = project
    first = stage(cwd)
    assert first.returncode == 0, first.stderr
    record = json.loads((cwd / "build" / "deploy.json").read_text())
    assert record["service"] == name and record["rollout"] == "COMPLETED"
    assert "+ create ECS service" in first.stderr
    second = stage(cwd)
    assert second.returncode == 0, second.stderr
    assert "of which 0 changed something" in second.stderr
    assert "+ " not in second.stderr


def test_plan_prints_what_would_change_and_changes_nothing(project):
    cwd, name = project
    result = run(cwd, str(TWEETBOT), "plan")
    assert result.returncode == 0, result.stderr
    assert f"would create ECR repository {name}" in result.stderr
    assert f"would create ECS service {name}" in result.stderr
    assert "change(s) planned" in result.stderr
    assert name not in repositories()
    assert not (cwd / "build" / "deploy.json").exists()


def test_destroy_asks_first_and_removes_everything_with_yes(project):
    cwd, name = project
    assert stage(cwd).returncode == 0
    declined = run(cwd, str(TWEETBOT), "destroy", stdin="n\n")
    assert declined.returncode == 1
    assert f"would delete ECR repository {name}" in declined.stderr
    assert name in repositories()
    removed = run(cwd, str(TWEETBOT), "destroy", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert name not in repositories()
    assert not (cwd / "build" / "deploy.json").exists()
    again = run(cwd, str(TWEETBOT), "destroy", "--yes")
    assert again.returncode == 0 and "nothing to remove" in again.stdout


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), "error: no AWS credentials: set AWS_PROFILE"),
        (("AWS_REGION", "AWS_DEFAULT_REGION"), "error: no AWS region: set AWS_REGION"),
    ],
)
def test_missing_credentials_or_region_is_one_line_and_exit_status_2(project, missing, message):
    cwd, _ = project
    env = {key: value for key, value in os.environ.items() if key not in missing + NO_AWS_ENV}
    env.update({key: value for key, value in FAKE_AWS_ENV.items() if key.startswith("AWS_C")})  # no ~/.aws
    result = run(cwd, str(TWEETBOT), "plan", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr


def test_aws_region_alone_is_enough_as_for_the_other_aws_tools(project):
    cwd, name = project
    env = {key: value for key, value in os.environ.items() if key != "AWS_DEFAULT_REGION"}
    result = run(cwd, str(TWEETBOT), "plan", env=env)
    assert result.returncode == 0, result.stderr
    assert f"would create ECS cluster {name}" in result.stderr
