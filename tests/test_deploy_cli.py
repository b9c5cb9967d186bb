"""The deploy stage script, `tweetbot plan` and `tweetbot destroy` as a user runs them, on moto."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys

import botocore.exceptions
import pytest
import yaml

from deploy.aws import unreachable
from tests.aws import FAKE_AWS_ENV, NO_AWS_ENV, counting_session, layer, moto_server, patched_environ, write_image
from tests.conftest import REPO
from tests.live_service import free_port
from tests.pipeline import source_tree

TWEETBOT = REPO / ".venv" / "bin" / "tweetbot"
NAMES = (f"cli{number}" for number in itertools.count())
# The image stage without a container builder: the bundle as the one layer of an OCI layout (tests/aws.py).
FAKE_IMAGE_STAGE = """import sys
from pathlib import Path

from deploy.image import model_version
from tests.aws import layer, write_image

bundle, layout, record = map(Path, sys.argv[1:])
files = {f"app/bundle/{p.name}": p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}
write_image(layout.parent, [layer(files)], tag=model_version(bundle), model_version=model_version(bundle))
"""


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
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


def test_plan_before_the_image_is_built_says_how_to_build_it(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"deploy": {"name": next(NAMES)}}))
    result = run(tmp_path, str(TWEETBOT), "plan")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr
        == "error: no image record at build/image.json: build the image first, `dvc repro deploy/dvc.yaml:image`\n"
    )


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


def test_a_setting_aws_would_refuse_is_one_line_at_plan_time_and_nothing_is_created(project):
    cwd, name = project
    (cwd / "params.yaml").write_text(yaml.safe_dump({"deploy": {"name": name, "cpu": 256, "memory": 4096}}))
    for command in ([str(TWEETBOT), "plan"], [sys.executable, str(REPO / "stages" / "deploy_stage.py")]):
        if command[0] == sys.executable:
            command += ["build/image", "build/image.json", "build/deploy.json"]
        result = run(cwd, *command)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "error: params.yaml: deploy.memory 4096 does not go with deploy.cpu 256: Fargate allows 512, 1024 or "
            "2048 MiB with 256 CPU units"
        ]
    assert name not in repositories()


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


@pytest.mark.parametrize("command", [("plan",), ("destroy", "--yes")])
def test_an_endpoint_that_does_not_answer_is_one_line_naming_it_and_the_fix(project, command):
    cwd, _ = project
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run(cwd, str(TWEETBOT), *command, env={**os.environ, "AWS_ENDPOINT_URL": nowhere})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: cannot reach {nowhere}/ (connection refused): AWS_ENDPOINT_URL sends every call there: start "
        "what it names (make moto) or unset it to use AWS"
    ]


@pytest.mark.parametrize(
    ("error", "what"),
    [
        (
            botocore.exceptions.EndpointConnectionError(
                endpoint_url="https://ecs.eu-west-1.amazonaws.com/",
                error="Failed to resolve 'ecs.eu-west-1.amazonaws.com' ([Errno -2] Name or service not known)",
            ),
            "no such host",
        ),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="https://ecs.eu-west-1.amazonaws.com/"), "timed out"),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="https://ecs.eu-west-1.amazonaws.com/"), "timed out"),
    ],
)
def test_a_dns_failure_or_a_timeout_says_so(error, what):
    with patched_environ({}, remove=("AWS_ENDPOINT_URL",)):
        message = str(unreachable(error))
    expected = "check the network (a proxy? HTTPS_PROXY) and the region"
    assert message == f"cannot reach https://ecs.eu-west-1.amazonaws.com/ ({what}): {expected}"


def test_aws_region_alone_is_enough_as_for_the_other_aws_tools(project):
    cwd, name = project
    env = {key: value for key, value in os.environ.items() if key != "AWS_DEFAULT_REGION"}
    result = run(cwd, str(TWEETBOT), "plan", env=env)
    assert result.returncode == 0, result.stderr
    assert f"would create ECS cluster {name}" in result.stderr


def test_make_deploy_deploys_again_after_a_destroy(tmp_path, moto_url):
    """`make deploy` (its recipe, from the Makefile), `tweetbot destroy --yes`, `make deploy`: deployed again."""
    root, name = tmp_path / "project", next(NAMES)
    source = source_tree()  # the working tree, without its pipeline state
    for path in ("deploy", "stages", "src", "service", "Dockerfile", "pyproject.toml", "uv.lock"):
        copy = shutil.copytree if (source / path).is_dir() else shutil.copy2
        copy(source / path, root / path)
    (root / "stages" / "image.py").write_text(FAKE_IMAGE_STAGE)
    (root / "models" / "export").mkdir(parents=True)
    (root / "models" / "export" / "manifest.json").write_text('{"version": "m1"}')
    (root / "params.yaml").write_text(yaml.safe_dump({"image": {}, "deploy": {"name": name}}))
    (root / ".venv").symlink_to(REPO / ".venv")
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the fake image stage imports tests.aws
    for command in (["git", "init", "-q"], [str(REPO / ".venv/bin/dvc"), "init", "-q"]):
        subprocess.run(command, cwd=root, check=True)
    subprocess.run([str(REPO / ".venv/bin/dvc"), "remote", "add", "-d", "local", str(tmp_path / "remote")], cwd=root)

    def make_deploy():  # `make deploy` but for `install` (this copy shares the repository's .venv)
        result = run(root, "make", "-f", str(REPO / "Makefile"), "-o", "install", "deploy", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def service_status():
        ecs = counting_session()[0].client("ecs")
        services = ecs.describe_services(cluster=name, services=[name]).get("services", [])
        return services[0]["status"] if services else None

    first = make_deploy()
    assert "Running stage 'deploy/dvc.yaml:deploy'" in first.stdout
    assert service_status() == "ACTIVE"
    endpoint = json.loads((root / "build" / "deploy.json").read_text())["endpoint"]
    assert endpoint.startswith(f"http://{name}-") and endpoint.endswith(".eu-west-1.elb.amazonaws.com")
    assert [line for line in first.stderr.splitlines() if line.startswith("endpoint:")] == [f"endpoint: {endpoint}"]
    assert run(root, str(TWEETBOT), "destroy", "--yes", env=env).returncode == 0
    assert service_status() == "INACTIVE" and not (root / "build" / "deploy.json").exists()
    again = make_deploy()
    assert "Running stage 'deploy/dvc.yaml:deploy'" in again.stdout
    assert service_status() == "ACTIVE" and (root / "build" / "deploy.json").exists()
