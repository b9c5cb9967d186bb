"""The ECS Fargate side of a deploy: what the service needs, its task definition, the service and its scaling.

Each `ensure_*` reads what exists and changes only what differs from what params ask for, through
`Aws.change`: a second deploy with the same inputs makes no mutating call, and a plan lists the same changes a
deploy would make.
"""

from __future__ import annotations

import hashlib
import json

import botocore.exceptions

from deploy.aws import Aws, error_code
from deploy.rollout import revision

EXECUTION_POLICY = "policy/service-role/AmazonECSTaskExecutionRolePolicy"
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
DEPLOYMENT_CONFIGURATION = {
    "deploymentCircuitBreaker": {"enable": True, "rollback": True},
    "minimumHealthyPercent": 100,
    "maximumPercent": 200,
}
SPEC_TAG = "tweetbot:spec"  # the hash of the registered definition: a revision is new only if this changes
SCALABLE_DIMENSION = "ecs:service:DesiredCount"
# The service image is Python; a health check that needs no curl.
HEALTH_CHECK = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=4)"


def ensure_cluster(aws: Aws, name: str) -> None:
    ecs = aws.client("ecs")
    clusters = ecs.describe_clusters(clusters=[name])["clusters"]
    if not any(cluster["status"] == "ACTIVE" for cluster in clusters):
        aws.change(f"create ECS cluster {name}", lambda: ecs.create_cluster(clusterName=name))


def ensure_log_group(aws: Aws, name: str, retention_days: int) -> None:
    logs = aws.client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    group = next((group for group in groups if group["logGroupName"] == name), None)
    if group is None:
        aws.change(f"create log group {name}", lambda: logs.create_log_group(logGroupName=name))
    if group is None or group.get("retentionInDays") != retention_days:
        aws.change(
            f"keep the logs of {name} for {retention_days} days",
            lambda: logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days),
        )


def ensure_execution_role(aws: Aws, name: str) -> str:
    """The ARN of the role ECS uses to pull the image and write logs, created and attached if needed."""
    iam = aws.client("iam")
    policy_arn = f"arn:{aws.partition}:iam::aws:{EXECUTION_POLICY}"
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "NoSuchEntity":
            raise
        role = None
    if role is None:
        arn = aws.change(
            f"create IAM role {name} (trusted by ecs-tasks.amazonaws.com)",
            lambda: iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))["Role"]["Arn"],
            planned=f"arn:{aws.partition}:iam::{aws.account_id}:role/{name}",
        )
        attached = []
    else:
        arn = role["Arn"]
        if "ecs-tasks.amazonaws.com" not in json.dumps(role.get("AssumeRolePolicyDocument", {})):
            aws.change(
                f"let ecs-tasks.amazonaws.com assume IAM role {name}",
                lambda: iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(TRUST_POLICY)),
            )
        attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    if policy_arn not in {policy["PolicyArn"] for policy in attached}:
        aws.change(
            f"attach AmazonECSTaskExecutionRolePolicy to IAM role {name}",
            lambda: iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn),
        )
    return arn


def task_definition(
    *,
    family: str,
    image: str,
    execution_role_arn: str,
    log_group: str,
    region: str,
    cpu: int,
    memory: int,
    port: int,
    environment: dict[str, str],
    architecture: str = "X86_64",
) -> dict:
    """The `register_task_definition` request for the service's one container."""
    return {
        "family": family,
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": str(cpu),
        "memory": str(memory),
        "runtimePlatform": {"cpuArchitecture": architecture, "operatingSystemFamily": "LINUX"},
        "executionRoleArn": execution_role_arn,
        "containerDefinitions": [
            {
                "name": family,
                "image": image,
                "essential": True,
                "portMappings": [{"containerPort": port, "protocol": "tcp"}],
                "environment": [{"name": key, "value": value} for key, value in sorted(environment.items())],
                "healthCheck": {
                    "command": ["CMD", "python3", "-c", HEALTH_CHECK.format(port=port)],
                    "interval": 15,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 30,
                },
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-region": region,
                        "awslogs-stream-prefix": family,
                    },
                },
            }
        ],
    }


def spec_hash(definition: dict) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:32]


def ensure_task_definition(aws: Aws, definition: dict) -> str:
    """The ARN of the family's latest revision if it is this definition, else of a newly registered one."""
    ecs = aws.client("ecs")
    family, digest = definition["family"], spec_hash(definition)
    try:
        latest = ecs.describe_task_definition(taskDefinition=family, include=["TAGS"])
    except botocore.exceptions.ClientError as error:
        if error_code(error) not in ("ClientException", "InvalidParameterException"):  # no such family
            raise
        latest = None
    if latest and {"key": SPEC_TAG, "value": digest} in latest.get("tags", []):
        return latest["taskDefinition"]["taskDefinitionArn"]
    return aws.change(
        f"register a new revision of task definition {family}",
        lambda: ecs.register_task_definition(**definition, tags=[{"key": SPEC_TAG, "value": digest}])["taskDefinition"][
            "taskDefinitionArn"
        ],
        planned=f"{family}:(new revision)",
    )


def describe_service(aws: Aws, cluster: str, name: str) -> dict | None:
    """The service if it exists and is not deleted."""
    try:
        services = aws.client("ecs").describe_services(cluster=cluster, services=[name])["services"]
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "ClusterNotFoundException":
            raise
        return None
    return next((service for service in services if service["status"] != "INACTIVE"), None)


def ensure_service(
    aws: Aws,
    *,
    cluster: str,
    name: str,
    task_definition_arn: str,
    desired_count: int,
    network: dict,
    port: int,
    target_group_arn: str | None,
) -> dict | None:
    """Create the service, or update it where it differs. Returns the service as AWS describes it."""
    ecs = aws.client("ecs")
    load_balancers = (
        [{"targetGroupArn": target_group_arn, "containerName": name, "containerPort": port}] if target_group_arn else []
    )
    balancing = {"loadBalancers": load_balancers, "healthCheckGracePeriodSeconds": 60} if load_balancers else {}
    service = describe_service(aws, cluster, name)
    if service is None:
        return aws.change(
            f"create ECS service {name} in {cluster} ({desired_count} task(s))",
            lambda: ecs.create_service(
                cluster=cluster,
                serviceName=name,
                taskDefinition=task_definition_arn,
                desiredCount=desired_count,
                launchType="FARGATE",
                deploymentConfiguration=DEPLOYMENT_CONFIGURATION,
                networkConfiguration=network,
                **balancing,
            )["service"],
        )
    differences = service_differences(service, task_definition_arn, network, load_balancers)
    if not differences:
        return service
    return aws.change(
        f"update ECS service {name}: {', '.join(differences)}",
        lambda: ecs.update_service(
            cluster=cluster,
            service=name,
            taskDefinition=task_definition_arn,
            deploymentConfiguration=DEPLOYMENT_CONFIGURATION,
            networkConfiguration=network,
            **(balancing or ({"loadBalancers": []} if service.get("loadBalancers") else {})),
        )["service"],
        planned=service,
    )


def service_differences(service: dict, task_definition_arn: str, network: dict, load_balancers: list) -> list:
    """What of the service differs from what is asked. Once created, autoscaling owns the desired count."""
    differences = []
    if service["taskDefinition"] != task_definition_arn:
        differences.append(f"task definition {revision(service['taskDefinition'])} -> {revision(task_definition_arn)}")
    if _network(service.get("networkConfiguration")) != _network(network):
        differences.append("network configuration")
    if [lb.get("targetGroupArn") for lb in service.get("loadBalancers", [])] != [
        lb["targetGroupArn"] for lb in load_balancers
    ]:
        differences.append("load balancer")
    # ECS always reports the deployment configuration; where an API leaves it out there is nothing to compare.
    reported = service.get("deploymentConfiguration")
    if reported is not None and any(reported.get(key) != value for key, value in DEPLOYMENT_CONFIGURATION.items()):
        differences.append("deployment configuration (circuit breaker with rollback, 100/200%)")
    return differences


def _network(configuration: dict | None) -> tuple:
    vpc = (configuration or {}).get("awsvpcConfiguration", {})
    return (
        tuple(sorted(vpc.get("subnets", []))),
        tuple(sorted(vpc.get("securityGroups", []))),
        vpc.get("assignPublicIp", "DISABLED"),
    )


def ensure_autoscaling(
    aws: Aws, cluster: str, name: str, min_tasks: int, max_tasks: int, cpu_target_percent: float
) -> None:
    """Target tracking on the service's average CPU, between `min_tasks` and `max_tasks` tasks."""
    scaling = aws.client("application-autoscaling")
    resource = f"service/{cluster}/{name}"
    target = {"ServiceNamespace": "ecs", "ResourceId": resource, "ScalableDimension": SCALABLE_DIMENSION}
    targets = scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])["ScalableTargets"]
    if not any(t["MinCapacity"] == min_tasks and t["MaxCapacity"] == max_tasks for t in targets):
        aws.change(
            f"scale {name} between {min_tasks} and {max_tasks} tasks",
            lambda: scaling.register_scalable_target(**target, MinCapacity=min_tasks, MaxCapacity=max_tasks),
        )
    policy = {
        "TargetValue": float(cpu_target_percent),
        "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
        "ScaleOutCooldown": 60,
        "ScaleInCooldown": 300,
    }
    policies = scaling.describe_scaling_policies(
        ServiceNamespace="ecs", ResourceId=resource, PolicyNames=[f"{name}-cpu"]
    )["ScalingPolicies"]
    current = policies[0].get("TargetTrackingScalingPolicyConfiguration") if policies else None
    if current is None or any(current.get(key) != value for key, value in policy.items()):
        aws.change(
            f"track {cpu_target_percent:g}% average CPU on {name}",
            lambda: scaling.put_scaling_policy(
                **target,
                PolicyName=f"{name}-cpu",
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration=policy,
            ),
        )
