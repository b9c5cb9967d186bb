"""A whole deploy against a moto server: what it creates, that a second run changes nothing, that a new image
rolls out as a new revision, that a plan changes nothing, and that destroy removes it all.

moto's ECS starts no tasks; MOTO_ECS_SERVICE_RUNNING makes it report a new service's tasks as running, so
its first rollout reads COMPLETED (the rollout logic itself is tested on canned answers in
test_deploy_rollout.py).
"""

from __future__ import annotations

import itertools
import json
import os

import pytest

from deploy import run
from deploy.aws import is_mutating
from tests.aws import counting_session, layer, moto_server, write_image
from tweetbot import params
from tweetbot.runtime.errors import UserError

BASE = layer({"usr/lib/python3/base.py": b"# the base image\n" * 2000})
APP = layer({"app/service.py": b"print('hello')\n"})
MODEL_V1 = layer({"app/bundle/weights.bin": bytes(range(256)) * 64})
MODEL_V2 = layer({"app/bundle/weights.bin": bytes(reversed(range(256))) * 64})
NAMES = (f"bot{number}" for number in itertools.count())


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        os.environ["MOTO_ECS_SERVICE_RUNNING"] = "1"  # undone when the server's environment is restored
        yield url


@pytest.fixture
def settings(moto_url):
    """The deploy params with a name no other test uses: one server serves the module, never reset."""
    return params.from_mapping("deploy", {"name": next(NAMES), "environment": {"LOG_LEVEL": "info"}})


def deploy(tmp_path, settings, apply=True):
    session, calls = counting_session()
    record = run.deploy(settings, tmp_path / "image", tmp_path / "image.json", tmp_path / "deploy.json", apply, session)
    return record, calls, session


def mutating(calls) -> list[str]:
    return [f"{service}.{operation}" for service, operation, _ in calls if is_mutating(operation)]


def requests(calls, operation: str) -> list[dict]:
    return [arguments for _, name, arguments in calls if name == operation]


def test_a_first_deploy_creates_everything_with_the_expected_settings(tmp_path, settings):
    image = write_image(tmp_path, [BASE, APP, MODEL_V1], tag="v1", model_version="model-1")
    record, calls, session = deploy(tmp_path, settings)
    name = settings.name

    ecr = session.client("ecr")
    (repository,) = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"]["scanOnPush"] is True
    (pushed,) = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])["images"]
    assert pushed["imageId"]["imageDigest"] == image["digest"]

    ecs = session.client("ecs")
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    (log_group,) = session.client("logs").describe_log_groups(logGroupNamePrefix=f"/ecs/{name}")["logGroups"]
    assert log_group["retentionInDays"] == 30

    iam = session.client("iam")
    role = iam.get_role(RoleName=f"{name}-task-execution")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [policy["PolicyName"] for policy in attached] == ["AmazonECSTaskExecutionRolePolicy"]

    definition = ecs.describe_task_definition(taskDefinition=name)["taskDefinition"]
    assert definition["requiresCompatibilities"] == ["FARGATE"] and definition["networkMode"] == "awsvpc"
    assert (definition["cpu"], definition["memory"]) == ("1024", "2048")
    assert definition["executionRoleArn"] == role["Arn"]
    (container,) = definition["containerDefinitions"]
    assert container["image"] == f"{repository['repositoryUri']}@{image['digest']}"
    assert container["portMappings"] == [{"containerPort": 8080, "protocol": "tcp"}]
    assert "/healthz" in " ".join(container["healthCheck"]["command"])
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert container["logConfiguration"]["options"]["awslogs-group"] == f"/ecs/{name}"
    assert container["environment"] == [{"name": "LOG_LEVEL", "value": "info"}]

    service = ecs.describe_services(cluster=name, services=[name])["services"][0]
    assert service["launchType"] == "FARGATE" and service["desiredCount"] == 1
    assert service["taskDefinition"] == definition["taskDefinitionArn"]
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert network["assignPublicIp"] == "ENABLED"
    ec2 = session.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    default_subnets = ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
    )["Subnets"]
    assert sorted(network["subnets"]) == sorted(subnet["SubnetId"] for subnet in default_subnets)
    (group,) = ec2.describe_security_groups(GroupIds=network["securityGroups"])["SecurityGroups"]
    assert [(rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) for rule in group["IpPermissions"]] == [
        ("tcp", 8080, 8080)
    ]
    # moto's create_service drops the deployment configuration: check the request that was sent.
    (created,) = requests(calls, "CreateService")
    assert created["deploymentConfiguration"] == {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "minimumHealthyPercent": 100,
        "maximumPercent": 200,
    }

    scaling = session.client("application-autoscaling")
    resource = f"service/{name}/{name}"
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource)["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 70.0
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"

    assert json.loads((tmp_path / "deploy.json").read_text()) == record
    assert record["task_definition"] == definition["taskDefinitionArn"]
    assert record["image"] == container["image"] and record["model_version"] == "model-1"
    assert record["rollout"] == "COMPLETED"


def test_a_second_deploy_with_the_same_inputs_makes_no_mutating_call(tmp_path, settings):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    _, first, _ = deploy(tmp_path, settings)
    written = (tmp_path / "deploy.json").read_bytes()
    _, second, _ = deploy(tmp_path, settings)
    assert len(mutating(first)) >= 15
    assert mutating(second) == []
    assert (tmp_path / "deploy.json").read_bytes() == written


def test_a_new_image_registers_a_new_revision_and_updates_the_service(tmp_path, settings):
    write_image(tmp_path, [BASE, APP, MODEL_V1], tag="v1")
    first, _, _ = deploy(tmp_path, settings)
    image = write_image(tmp_path, [BASE, APP, MODEL_V2], tag="v2", model_version="model-2")
    second, calls, session = deploy(tmp_path, settings)

    assert second["task_definition"].endswith(f"{settings.name}:2")
    assert first["task_definition"].endswith(f"{settings.name}:1")
    assert sorted(mutating(calls)) == sorted(
        ["ecr.InitiateLayerUpload", "ecr.UploadLayerPart", "ecr.CompleteLayerUpload"] * 2  # config + model layer
        + ["ecr.PutImage", "ecs.RegisterTaskDefinition", "ecs.UpdateService"]
    )
    (update,) = requests(calls, "UpdateService")
    assert update["taskDefinition"] == second["task_definition"]
    assert update["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    service = session.client("ecs").describe_services(cluster=settings.name, services=[settings.name])["services"][0]
    assert service["taskDefinition"] == second["task_definition"]
    assert second["image"].endswith(image["digest"]) and second["model_version"] == "model-2"


def test_a_plan_lists_exactly_what_a_deploy_then_changes_and_changes_nothing(tmp_path, settings, capsys):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    record, calls, session = deploy(tmp_path, settings, apply=False)
    assert record is None and mutating(calls) == []
    planned = [line.removeprefix("would ") for line in capsys.readouterr().err.splitlines() if "would " in line]
    repositories = session.client("ecr").describe_repositories()["repositories"]
    assert settings.name not in {repository["repositoryName"] for repository in repositories}
    assert not (tmp_path / "deploy.json").exists()

    _, calls, _ = deploy(tmp_path, settings)
    made = [line.removeprefix("+ ") for line in capsys.readouterr().err.splitlines() if line.startswith("+ ")]
    assert planned == made and len(made) >= 12

    changed = params.from_mapping("deploy", {"name": settings.name, "cpu": 2048, "memory": 4096})
    _, calls, _ = deploy(tmp_path, changed, apply=False)
    assert mutating(calls) == []
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "2 change(s) planned"
    assert lines[0] == f"would register a new revision of task definition {settings.name}"
    assert lines[1].startswith(f"would update ECS service {settings.name}: task definition {settings.name}:1 ->")


def test_destroy_removes_everything_deploy_made_and_then_finds_nothing(tmp_path, settings):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    deploy(tmp_path, settings)
    session, _ = counting_session()
    removed = run.destroy(settings, tmp_path / "deploy.json", session=session)
    assert len(removed) == 10
    assert not (tmp_path / "deploy.json").exists()
    name = settings.name
    assert session.client("ecs").describe_services(cluster=name, services=[name])["services"][0]["status"] == (
        "INACTIVE"
    )
    repositories = session.client("ecr").describe_repositories()["repositories"]
    assert name not in {repository["repositoryName"] for repository in repositories}
    assert not session.client("ecs").list_task_definitions(familyPrefix=name, status="ACTIVE")["taskDefinitionArns"]
    session, calls = counting_session()
    assert run.destroy(settings, tmp_path / "deploy.json", session=session) == []
    assert mutating(calls) == []


def test_the_image_record_and_the_layout_must_agree(tmp_path, settings):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    record = json.loads((tmp_path / "image.json").read_text())
    (tmp_path / "image.json").write_text(json.dumps({**record, "digest": "sha256:" + "0" * 64}))
    with pytest.raises(UserError, match="run `dvc repro deploy/dvc.yaml:image`"):
        deploy(tmp_path, settings)


def test_secrets_do_not_go_into_the_task_definition(tmp_path, settings):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    leaky = params.from_mapping("deploy", {"name": settings.name, "environment": {"X_BEARER_TOKEN": "abc"}})
    with pytest.raises(UserError, match="looks like a secret"):
        deploy(tmp_path, leaky)


def test_the_desired_count_must_lie_within_the_autoscaling_bounds():
    with pytest.raises(UserError, match="desired_count 5 must lie between"):
        params.from_mapping("deploy", {"desired_count": 5, "max_tasks": 4})
