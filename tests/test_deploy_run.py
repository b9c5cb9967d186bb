"""A whole deploy against a moto server: what it creates, field by field; that a second run changes nothing;
that a new image rolls out as a new revision behind the same endpoint; that a plan changes nothing; HTTPS,
the single public task, a target group of the user's, Fargate Spot; and that destroy removes it all.

moto's ECS starts no tasks; MOTO_ECS_SERVICE_RUNNING makes it report a new service's tasks as running, and
tests/aws.py completes an update's rollout, so rollouts read COMPLETED (the rollout logic itself is tested on
canned answers in test_deploy_rollout.py, target health and draining in test_deploy_balancer.py).
"""

from __future__ import annotations

import itertools
import json

import pytest

from deploy import balancer, ecs, network, run, shutdown
from deploy.aws import Aws, is_mutating
from tests.aws import REGION, counting_session, layer, moto_server, write_image
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
        yield url


@pytest.fixture
def name(moto_url) -> str:
    """A deploy name no other test uses: one server serves the module, never reset."""
    return next(NAMES)


def settings(name: str, **values):
    return params.from_mapping("deploy", {"name": name, **values})


def deploy(tmp_path, settings, apply=True):
    session, calls = counting_session()
    record = run.deploy(settings, tmp_path / "image", tmp_path / "image.json", tmp_path / "deploy.json", apply, session)
    return record, calls, session


def mutating(calls) -> list[str]:
    return [f"{service}.{operation}" for service, operation, _ in calls if is_mutating(operation)]


def requests(calls, operation: str) -> list[dict]:
    return [arguments for _, name, arguments in calls if name == operation]


def tags(items: list[dict]) -> dict[str, str]:
    return {item.get("Key", item.get("key")): item.get("Value", item.get("value")) for item in items}


def session_aws(session) -> Aws:
    return Aws(session=session)


def ingress(ec2, group_id: str) -> list[tuple]:
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return sorted(
        (rule["IpProtocol"], rule["FromPort"], rule["ToPort"], source)
        for rule in group["IpPermissions"]
        for source in [r["CidrIp"] for r in rule["IpRanges"]] + [p["GroupId"] for p in rule["UserIdGroupPairs"]]
    )


def test_a_first_deploy_creates_everything_with_the_expected_settings(tmp_path, name):
    image = write_image(tmp_path, [BASE, APP, MODEL_V1], tag="v1", model_version="model-1")
    record, calls, session = deploy(tmp_path, settings(name, environment={"LOG_LEVEL": "info"}))
    project = {"project": name}

    ecr = session.client("ecr")
    (repository,) = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"]["scanOnPush"] is True
    assert tags(ecr.list_tags_for_resource(resourceArn=repository["repositoryArn"])["tags"]) == project
    (pushed,) = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])["images"]
    assert pushed["imageId"]["imageDigest"] == image["digest"]

    ecs = session.client("ecs")
    (cluster,) = ecs.describe_clusters(clusters=[name], include=["SETTINGS", "TAGS"])["clusters"]
    assert cluster["status"] == "ACTIVE"
    assert cluster["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    assert cluster["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert cluster["defaultCapacityProviderStrategy"] == [{"capacityProvider": "FARGATE", "weight": 1}]
    assert tags(cluster["tags"]) == project
    logs = session.client("logs")
    (log_group,) = logs.describe_log_groups(logGroupNamePrefix=f"/ecs/{name}")["logGroups"]
    assert log_group["retentionInDays"] == 30
    assert logs.list_tags_log_group(logGroupName=f"/ecs/{name}")["tags"] == project

    iam = session.client("iam")
    role = iam.get_role(RoleName=f"{name}-task-execution")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert tags(role["Tags"]) == project
    attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
    assert [policy["PolicyName"] for policy in attached] == ["AmazonECSTaskExecutionRolePolicy"]

    described = ecs.describe_task_definition(taskDefinition=name, include=["TAGS"])
    definition = described["taskDefinition"]
    assert definition["family"] == name
    assert definition["requiresCompatibilities"] == ["FARGATE"] and definition["networkMode"] == "awsvpc"
    assert (definition["cpu"], definition["memory"]) == ("1024", "2048")
    assert definition["runtimePlatform"] == {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"}
    assert definition["executionRoleArn"] == role["Arn"]
    (container,) = definition["containerDefinitions"]
    assert container["name"] == name and container["essential"] is True
    assert container["image"] == f"{repository['repositoryUri']}@{image['digest']}"
    assert container["portMappings"] == [{"containerPort": 8080, "protocol": "tcp"}]
    assert container["environment"] == [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}]
    assert container["stopTimeout"] == shutdown.STOP_TIMEOUT_S == 30
    assert container["healthCheck"]["command"][:3] == ["CMD", "python3", "-c"]
    assert "127.0.0.1:8080/healthz" in container["healthCheck"]["command"][3]
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": f"/ecs/{name}",
            "awslogs-region": REGION,
            "awslogs-stream-prefix": name,
            "mode": "non-blocking",
            "max-buffer-size": "25m",
        },
    }
    revision_tags = tags(described["tags"])
    assert revision_tags.pop("tweetbot:spec")
    assert revision_tags == {**project, "model-version": "model-1", "image-tag": "v1"}

    ec2, elbv2 = session.client("ec2"), session.client("elbv2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    default_subnets = ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
    )["Subnets"]
    (load_balancer,) = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"]
    assert (load_balancer["Scheme"], load_balancer["Type"], load_balancer["IpAddressType"]) == (
        "internet-facing",
        "application",
        "ipv4",
    )
    assert load_balancer["VpcId"] == vpc
    zones = load_balancer["AvailabilityZones"]
    assert sorted(zone["SubnetId"] for zone in zones) == sorted(subnet["SubnetId"] for subnet in default_subnets)
    assert len({zone["ZoneName"] for zone in zones}) >= 2
    (balancer_group,) = load_balancer["SecurityGroups"]
    assert ingress(ec2, balancer_group) == [("tcp", 80, 80, "0.0.0.0/0")]
    attributes = elbv2.describe_load_balancer_attributes(LoadBalancerArn=load_balancer["LoadBalancerArn"])
    assert {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"} in attributes["Attributes"]
    lb_tags = elbv2.describe_tags(ResourceArns=[load_balancer["LoadBalancerArn"]])["TagDescriptions"][0]["Tags"]
    assert tags(lb_tags) == project

    (group,) = elbv2.describe_target_groups(Names=[name])["TargetGroups"]
    assert group["VpcId"] == vpc and group["LoadBalancerArns"] == [load_balancer["LoadBalancerArn"]]
    assert (group["TargetType"], group["Protocol"], group["ProtocolVersion"]) == ("ip", "HTTP", "HTTP1")
    assert {key: group[key] for key in balancer.HEALTH_CHECK} == {
        "HealthCheckEnabled": True,
        "HealthCheckProtocol": "HTTP",
        "HealthCheckPort": "traffic-port",
        "HealthCheckPath": "/readyz",
        "HealthCheckIntervalSeconds": 5,
        "HealthCheckTimeoutSeconds": 4,
        "HealthyThresholdCount": 2,
        "UnhealthyThresholdCount": 3,
        "Matcher": {"HttpCode": "200"},
    }
    group_attributes = elbv2.describe_target_group_attributes(TargetGroupArn=group["TargetGroupArn"])["Attributes"]
    assert {"Key": "deregistration_delay.timeout_seconds", "Value": "30"} in group_attributes
    assert tags(elbv2.describe_tags(ResourceArns=[group["TargetGroupArn"]])["TagDescriptions"][0]["Tags"]) == project

    (listener,) = elbv2.describe_listeners(LoadBalancerArn=load_balancer["LoadBalancerArn"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (80, "HTTP")
    assert listener["DefaultActions"] == [{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}]
    (rule,) = elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
    assert rule["IsDefault"] is True and rule["Conditions"] == []
    assert rule["Actions"] == [{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}]

    service = ecs.describe_services(cluster=name, services=[name], include=["TAGS"])["services"][0]
    assert service["desiredCount"] == 1 and service["taskDefinition"] == definition["taskDefinitionArn"]
    assert service["loadBalancers"] == [
        {"targetGroupArn": group["TargetGroupArn"], "containerName": name, "containerPort": 8080}
    ]
    assert service["propagateTags"] == "TASK_DEFINITION" and tags(service["tags"]) == project
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert network["assignPublicIp"] == "ENABLED"
    assert sorted(network["subnets"]) == sorted(subnet["SubnetId"] for subnet in default_subnets)
    (tasks_group,) = network["securityGroups"]
    assert ingress(ec2, tasks_group) == [("tcp", 8080, 8080, balancer_group)]  # from the load balancer only
    # moto's create_service drops these settings: check the request that was sent.
    (created,) = requests(calls, "CreateService")
    assert created["launchType"] == "FARGATE" and "capacityProviderStrategy" not in created
    assert created["enableECSManagedTags"] is True
    assert created["healthCheckGracePeriodSeconds"] == 30
    assert created["deploymentConfiguration"] == {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "minimumHealthyPercent": 100,
        "maximumPercent": 200,
    }
    for group_id, purpose in ((balancer_group, "load-balancer"), (tasks_group, "service")):
        (found,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
        assert tags(found["Tags"]) == {"Name": f"{name}-{purpose}", **project}

    scaling = session.client("application-autoscaling")
    resource = f"service/{name}/{name}"
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    assert requests(calls, "RegisterScalableTarget")[0]["Tags"] == project
    policies = scaling.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource)["ScalingPolicies"]
    tracking = {policy["PolicyName"]: policy["TargetTrackingScalingPolicyConfiguration"] for policy in policies}
    balancer_id = load_balancer["LoadBalancerArn"].split(":loadbalancer/")[1]
    assert tracking == {
        f"{name}-cpu": {
            "TargetValue": 70.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
            "ScaleOutCooldown": 60,
            "ScaleInCooldown": 300,
        },
        f"{name}-requests": {
            "TargetValue": 1000.0,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "ALBRequestCountPerTarget",
                "ResourceLabel": f"{balancer_id}/{group['TargetGroupArn'].split(':')[-1]}",
            },
            "ScaleOutCooldown": 60,
            "ScaleInCooldown": 300,
        },
    }
    assert balancer_id.startswith(f"app/{name}/")

    assert json.loads((tmp_path / "deploy.json").read_text()) == record
    assert record["endpoint"] == f"http://{load_balancer['DNSName']}"
    assert record["target_group"] == group["TargetGroupArn"]
    assert record["task_definition"] == definition["taskDefinitionArn"]
    assert record["image"] == container["image"] and record["model_version"] == "model-1"
    assert record["rollout"] == "COMPLETED"


def test_a_second_deploy_with_the_same_inputs_makes_no_mutating_call(tmp_path, name):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    _, first, _ = deploy(tmp_path, settings(name))
    written = (tmp_path / "deploy.json").read_bytes()
    _, second, _ = deploy(tmp_path, settings(name))
    assert sorted(set(mutating(first))) == sorted(
        f"{service}.{operation}"
        for service, operations in {
            "ecr": ["CreateRepository", "InitiateLayerUpload", "UploadLayerPart", "CompleteLayerUpload", "PutImage"],
            "ecs": ["CreateCluster", "RegisterTaskDefinition", "CreateService"],
            "logs": ["CreateLogGroup", "PutRetentionPolicy"],
            "iam": ["CreateRole", "AttachRolePolicy"],
            "ec2": ["CreateSecurityGroup", "AuthorizeSecurityGroupIngress"],
            "elbv2": [
                "CreateLoadBalancer",
                "ModifyLoadBalancerAttributes",
                "CreateTargetGroup",
                "ModifyTargetGroupAttributes",
                "CreateListener",
            ],
            "application-autoscaling": ["RegisterScalableTarget", "PutScalingPolicy"],
        }.items()
        for operation in operations
    )
    assert mutating(second) == []
    assert (tmp_path / "deploy.json").read_bytes() == written


def test_a_new_image_registers_a_new_revision_and_updates_the_service_behind_the_same_endpoint(tmp_path, name):
    write_image(tmp_path, [BASE, APP, MODEL_V1], tag="v1")
    first, _, _ = deploy(tmp_path, settings(name))
    image = write_image(tmp_path, [BASE, APP, MODEL_V2], tag="v2", model_version="model-2")
    second, calls, session = deploy(tmp_path, settings(name))

    assert second["task_definition"].endswith(f"{name}:2")
    assert first["task_definition"].endswith(f"{name}:1")
    assert sorted(mutating(calls)) == sorted(
        ["ecr.InitiateLayerUpload", "ecr.UploadLayerPart", "ecr.CompleteLayerUpload"] * 2  # config + model layer
        + ["ecr.PutImage", "ecs.RegisterTaskDefinition", "ecs.UpdateService"]
    )
    (update,) = requests(calls, "UpdateService")
    assert update["taskDefinition"] == second["task_definition"]
    assert update["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert "forceNewDeployment" not in update and "capacityProviderStrategy" not in update
    service = session.client("ecs").describe_services(cluster=name, services=[name])["services"][0]
    assert service["taskDefinition"] == second["task_definition"]
    assert second["image"].endswith(image["digest"]) and second["model_version"] == "model-2"
    assert second["endpoint"] == first["endpoint"] and second["endpoint"].startswith(f"http://{name}-")
    (register,) = requests(calls, "RegisterTaskDefinition")
    assert {"key": "model-version", "value": "model-2"} in register["tags"]
    assert {"key": "image-tag", "value": "v2"} in register["tags"]


def test_a_plan_lists_exactly_what_a_deploy_then_changes_and_changes_nothing(tmp_path, name, capsys):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    record, calls, session = deploy(tmp_path, settings(name), apply=False)
    assert record is None and mutating(calls) == []
    planned = [line.removeprefix("would ") for line in capsys.readouterr().err.splitlines() if "would " in line]
    repositories = session.client("ecr").describe_repositories()["repositories"]
    assert name not in {repository["repositoryName"] for repository in repositories}
    assert not (tmp_path / "deploy.json").exists()

    _, calls, _ = deploy(tmp_path, settings(name))
    made = [line.removeprefix("+ ") for line in capsys.readouterr().err.splitlines() if line.startswith("+ ")]
    assert planned == made and len(made) >= 20

    _, calls, _ = deploy(tmp_path, settings(name, cpu=2048, memory=4096), apply=False)
    assert mutating(calls) == []
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "2 change(s) planned"
    assert lines[0] == f"would register a new revision of task definition {name}"
    assert lines[1].startswith(f"would update ECS service {name}: task definition {name}:1 ->")


def test_a_desired_count_changed_after_creation_is_reported_not_applied(tmp_path, name, capsys):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    deploy(tmp_path, settings(name))
    capsys.readouterr()
    _, calls, _ = deploy(tmp_path, settings(name, desired_count=3), apply=False)
    assert mutating(calls) == []
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "note: deploy.desired_count (3) is used when the service is created; autoscaling sets the count now (1): "
        "to run more tasks, raise deploy.min_tasks",
        "no changes: the deployment is current",
    ]


def test_with_a_certificate_443_serves_https_and_80_redirects_to_it(tmp_path, name):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    acm = counting_session()[0].client("acm")
    certificate = acm.request_certificate(DomainName=f"{name}.example.com")["CertificateArn"]
    record, _, session = deploy(tmp_path, settings(name, certificate_arn=certificate, allowed_cidrs=["203.0.113.0/24"]))
    elbv2, ec2 = session.client("elbv2"), session.client("ec2")
    (load_balancer,) = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"]
    (group,) = elbv2.describe_target_groups(Names=[name])["TargetGroups"]
    listeners = {
        listener["Port"]: listener
        for listener in elbv2.describe_listeners(LoadBalancerArn=load_balancer["LoadBalancerArn"])["Listeners"]
    }
    assert sorted(listeners) == [80, 443]
    secure = listeners[443]
    assert (secure["Protocol"], secure["SslPolicy"]) == ("HTTPS", "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09")
    assert [item["CertificateArn"] for item in secure["Certificates"]] == [certificate]
    assert secure["DefaultActions"] == [{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}]
    plain = listeners[80]
    assert plain["Protocol"] == "HTTP"
    (redirect,) = plain["DefaultActions"]
    assert redirect["Type"] == "redirect"
    assert {key: redirect["RedirectConfig"][key] for key in ("Protocol", "Port", "StatusCode")} == {
        "Protocol": "HTTPS",
        "Port": "443",
        "StatusCode": "HTTP_301",
    }
    (rule,) = elbv2.describe_rules(ListenerArn=secure["ListenerArn"])["Rules"]
    assert rule["IsDefault"] and rule["Actions"] == secure["DefaultActions"]
    (balancer_group,) = load_balancer["SecurityGroups"]
    assert ingress(ec2, balancer_group) == [("tcp", 80, 80, "203.0.113.0/24"), ("tcp", 443, 443, "203.0.113.0/24")]
    assert record["endpoint"] == f"https://{load_balancer['DNSName']}"

    _, calls, _ = deploy(tmp_path, settings(name, certificate_arn=certificate, allowed_cidrs=["203.0.113.0/24"]))
    assert mutating(calls) == []
    # Back to plain HTTP: 443 goes, 80 forwards again, the load balancer's group opens 80 only.
    record, calls, _ = deploy(tmp_path, settings(name, allowed_cidrs=["203.0.113.0/24"]))
    assert sorted(mutating(calls)) == ["ec2.RevokeSecurityGroupIngress", "elbv2.DeleteListener", "elbv2.ModifyListener"]
    (listener,) = elbv2.describe_listeners(LoadBalancerArn=load_balancer["LoadBalancerArn"])["Listeners"]
    assert listener["Port"] == 80
    assert listener["DefaultActions"] == [{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}]
    assert record["endpoint"] == f"http://{load_balancer['DNSName']}"


def test_without_a_load_balancer_one_public_task_and_a_switch_either_way(tmp_path, name, capsys):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    record, calls, session = deploy(tmp_path, settings(name, load_balancer=False, allowed_cidrs=["198.51.100.7/32"]))
    ec2, ecs, elbv2 = session.client("ec2"), session.client("ecs"), session.client("elbv2")
    assert not [call for call in mutating(calls) if call.startswith("elbv2.")]
    assert balancer.find(session_aws(session), name) == (None, None)
    service = ecs.describe_services(cluster=name, services=[name])["services"][0]
    assert service["loadBalancers"] == []
    (tasks_group,) = service["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"]
    assert ingress(ec2, tasks_group) == [("tcp", 8080, 8080, "198.51.100.7/32")]
    policies = session.client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace="ecs", ResourceId=f"service/{name}/{name}"
    )["ScalingPolicies"]
    assert [policy["PolicyName"] for policy in policies] == [f"{name}-cpu"]
    assert record["target_group"] is None and record["endpoint"] is None  # moto's tasks have no address

    record, _, _ = deploy(tmp_path, settings(name, allowed_cidrs=["198.51.100.7/32"]))  # the load balancer comes
    (load_balancer,) = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"]
    assert ingress(ec2, tasks_group) == [("tcp", 8080, 8080, load_balancer["SecurityGroups"][0])]
    assert ecs.describe_services(cluster=name, services=[name])["services"][0]["loadBalancers"]
    assert record["endpoint"] == f"http://{load_balancer['DNSName']}"

    capsys.readouterr()
    _, calls, _ = deploy(tmp_path, settings(name, load_balancer=False), apply=False)  # ... and goes
    assert mutating(calls) == []
    planned = capsys.readouterr().err
    for change in (
        f"would delete load balancer {name} and its 1 listener(s)",
        f"would delete target group {name}",
        f"would delete security group {name}-load-balancer",
        f"would stop tracking requests on {name}",
    ):
        assert change in planned
    deploy(tmp_path, settings(name, load_balancer=False))
    assert balancer.find(session_aws(session), name) == (None, None)
    assert (
        ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{name}-load-balancer"]}])[
            "SecurityGroups"
        ]
        == []
    )
    assert ecs.describe_services(cluster=name, services=[name])["services"][0]["loadBalancers"] == []


def test_a_target_group_of_the_users_is_adopted_instead_of_making_a_load_balancer(tmp_path, name):
    session, _ = counting_session()
    ec2, elbv2 = session.client("ec2"), session.client("elbv2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [
        subnet["SubnetId"] for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    ]
    theirs = ec2.create_security_group(GroupName=f"{name}-theirs", Description="their load balancer", VpcId=vpc)
    load_balancer = elbv2.create_load_balancer(
        Name=f"{name}-theirs", Subnets=subnets, SecurityGroups=[theirs["GroupId"]], Type="application"
    )["LoadBalancers"][0]
    group = elbv2.create_target_group(Name=f"{name}-theirs", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip")
    group_arn = group["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(
        LoadBalancerArn=load_balancer["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group_arn}],
    )
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    record, calls, _ = deploy(tmp_path, settings(name, target_group_arn=group_arn))
    assert not [call for call in mutating(calls) if call.startswith("elbv2.")]
    assert balancer.find(session_aws(session), name) == (None, None)
    service = session.client("ecs").describe_services(cluster=name, services=[name])["services"][0]
    assert [lb["targetGroupArn"] for lb in service["loadBalancers"]] == [group_arn]
    (tasks_group,) = service["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"]
    assert ingress(ec2, tasks_group) == [("tcp", 8080, 8080, theirs["GroupId"])]
    assert record["endpoint"] == f"http://{load_balancer['DNSName']}"
    _, calls, _ = deploy(tmp_path, settings(name, target_group_arn=group_arn))
    assert mutating(calls) == []
    run.destroy(settings(name, target_group_arn=group_arn), tmp_path / "deploy.json", session=session)
    assert elbv2.describe_target_groups(TargetGroupArns=[group_arn])["TargetGroups"]  # theirs stays


def test_fargate_spot_is_a_capacity_provider_strategy(tmp_path, name):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    _, calls, _ = deploy(tmp_path, settings(name, spot=True))
    (created,) = requests(calls, "CreateService")
    assert created["capacityProviderStrategy"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    assert "launchType" not in created
    _, calls, _ = deploy(tmp_path, settings(name, spot=True))
    assert mutating(calls) == []


def test_a_move_between_fargate_and_fargate_spot_is_seen_in_what_ecs_reports():
    """moto reports no capacity provider strategy: ECS's own shapes (DescribeServices) stand in for it."""
    arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/bot:1"
    on_spot = {
        "taskDefinition": arn,
        "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1, "base": 0}],
    }
    launched = {"taskDefinition": arn, "launchType": "FARGATE"}  # a service made before tweetbot knew Spot
    assert ecs.service_differences(on_spot, arn, {}, [], spot=True) == []
    assert ecs.service_differences(on_spot, arn, {}, [], spot=False) == ["capacity Fargate (on demand)"]
    assert ecs.service_differences(launched, arn, {}, [], spot=False) == []
    assert ecs.service_differences(launched, arn, {}, [], spot=True) == ["capacity Fargate Spot"]


def test_destroy_removes_everything_deploy_made_and_then_finds_nothing(tmp_path, name):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    deploy(tmp_path, settings(name))
    session, calls = counting_session()
    removed = run.destroy(settings(name), tmp_path / "deploy.json", session=session)
    assert removed == [
        f"delete scaling policy {name}-cpu",
        f"delete scaling policy {name}-requests",
        f"stop autoscaling {name}",
        f"delete ECS service {name} and stop its tasks",
        f"deregister task definition {name}:1",
        f"delete ECS cluster {name}",
        f"delete load balancer {name} and its 1 listener(s)",
        f"delete target group {name}",
        f"delete security group {name}-service",  # first: it admits the load balancer's group
        f"delete security group {name}-load-balancer",
        f"delete log group /ecs/{name}",
        f"detach AmazonECSTaskExecutionRolePolicy from IAM role {name}-task-execution",
        f"delete IAM role {name}-task-execution",
        f"delete ECR repository {name} and its images",
    ]
    operations = [operation for _, operation, _ in calls]
    assert operations.index("DescribeTargetHealth") < operations.index("DeleteLoadBalancer")  # drained first
    assert operations.index("DeleteLoadBalancer") < operations.index("DeleteTargetGroup")
    assert not (tmp_path / "deploy.json").exists()
    ecs, ec2 = session.client("ecs"), session.client("ec2")
    assert ecs.describe_services(cluster=name, services=[name])["services"][0]["status"] == "INACTIVE"
    repositories = session.client("ecr").describe_repositories()["repositories"]
    assert name not in {repository["repositoryName"] for repository in repositories}
    assert not ecs.list_task_definitions(familyPrefix=name, status="ACTIVE")["taskDefinitionArns"]
    assert balancer.find(session_aws(session), name) == (None, None)
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{name}-*"]}])["SecurityGroups"]
    assert groups == []
    session, calls = counting_session()
    assert run.destroy(settings(name), tmp_path / "deploy.json", session=session) == []
    assert mutating(calls) == []


def test_the_default_subnets_are_those_of_three_zones_and_a_load_balancer_needs_two(moto_url):
    aws = Aws("us-east-1")  # six zones, six default subnets
    vpc, subnets = network.placement(aws, [], zones_needed=2)
    found = aws.client("ec2").describe_subnets(SubnetIds=subnets)["Subnets"]
    found.sort(key=lambda subnet: subnet["AvailabilityZone"])
    assert [subnet["AvailabilityZone"] for subnet in found] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert {subnet["VpcId"] for subnet in found} == {vpc}
    with pytest.raises(UserError, match=r"deploy.subnets cover 1 zone\(s\) \(us-east-1a\): a load balancer needs"):
        network.placement(aws, [found[0]["SubnetId"]], zones_needed=2)
    assert network.placement(aws, [found[0]["SubnetId"]], zones_needed=1) == (vpc, [found[0]["SubnetId"]])


def test_the_image_record_and_the_layout_must_agree(tmp_path, name):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    record = json.loads((tmp_path / "image.json").read_text())
    (tmp_path / "image.json").write_text(json.dumps({**record, "digest": "sha256:" + "0" * 64}))
    with pytest.raises(UserError, match="run `dvc repro deploy/dvc.yaml:image`"):
        deploy(tmp_path, settings(name))


@pytest.mark.parametrize(
    ("environment", "message"),
    [({"X_BEARER_TOKEN": "abc"}, "looks like a secret"), ({"PORT": "9000"}, "listens on deploy.port")],
)
def test_the_environment_holds_no_secret_and_no_port(tmp_path, name, environment, message):
    write_image(tmp_path, [BASE, APP, MODEL_V1])
    with pytest.raises(UserError, match=message):
        deploy(tmp_path, settings(name, environment=environment))
