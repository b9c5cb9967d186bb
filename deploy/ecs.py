"""The ECS Fargate side of a deploy: what the service needs, its task definition, the service and its scaling.

Each `ensure_*` reads what exists and changes only what differs from what params ask for, through
`Aws.change`: a second deploy with the same inputs makes no mutating call, and a plan lists the same changes a
deploy would make.
"""

from __future__ import annotations

import hashlib
import json

import botocore.exceptions

from deploy import shutdown
from deploy.aws import Aws, error_code
from deploy.balancer import Balancer
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
CONTAINER_INSIGHTS = [{"name": "containerInsights", "value": "enabled"}]
CAPACITY_PROVIDERS = ["FARGATE", "FARGATE_SPOT"]  # on the cluster, so deploy.spot can move the service either way
ON_DEMAND = [{"capacityProvider": "FARGATE", "weight": 1}]
SPOT = [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
# awslogs never blocks the service's stdout: a CloudWatch Logs hiccup costs log lines beyond this buffer, not
# requests (the buffer is 25 MiB of the task's memory; AWS's own tests of it lost nothing at that size).
LOG_BUFFER = "25m"
# The service image is Python; a health check that needs no curl.
HEALTH_CHECK = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=4)"


def ensure_cluster(aws: Aws, name: str, tags: dict[str, str]) -> None:
    """The cluster, with Container Insights on and both Fargate capacity providers."""
    ecs = aws.client("ecs")
    clusters = ecs.describe_clusters(clusters=[name], include=["SETTINGS"])["clusters"]
    cluster = next((cluster for cluster in clusters if cluster["status"] == "ACTIVE"), None)
    if cluster is None:
        aws.change(
            f"create ECS cluster {name} (Container Insights, Fargate and Fargate Spot)",
            lambda: ecs.create_cluster(
                clusterName=name,
                settings=CONTAINER_INSIGHTS,
                capacityProviders=CAPACITY_PROVIDERS,
                defaultCapacityProviderStrategy=ON_DEMAND,
                tags=ecs_tags(tags),
            ),
        )
        return
    settings = {setting["name"]: setting["value"] for setting in cluster.get("settings", [])}
    if settings.get("containerInsights") not in ("enabled", "enhanced"):
        aws.change(
            f"turn on Container Insights for ECS cluster {name}",
            lambda: ecs.update_cluster_settings(cluster=name, settings=CONTAINER_INSIGHTS),
        )
    providers = cluster.get("capacityProviders", [])
    if not set(CAPACITY_PROVIDERS) <= set(providers):
        aws.change(
            f"let ECS cluster {name} run tasks on Fargate and Fargate Spot",
            lambda: ecs.put_cluster_capacity_providers(
                cluster=name,
                capacityProviders=sorted(set(providers) | set(CAPACITY_PROVIDERS)),
                defaultCapacityProviderStrategy=cluster.get("defaultCapacityProviderStrategy") or ON_DEMAND,
            ),
        )


def ensure_log_group(aws: Aws, name: str, retention_days: int, tags: dict[str, str]) -> None:
    logs = aws.client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    group = next((group for group in groups if group["logGroupName"] == name), None)
    if group is None:
        aws.change(f"create log group {name}", lambda: logs.create_log_group(logGroupName=name, tags=tags))
    if group is None or group.get("retentionInDays") != retention_days:
        aws.change(
            f"keep the logs of {name} for {retention_days} days",
            lambda: logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days),
        )


def ensure_execution_role(aws: Aws, name: str, tags: dict[str, str]) -> str:
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
            lambda: iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
            )["Role"]["Arn"],
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
    tags: dict[str, str],
    architecture: str = "X86_64",
) -> dict:
    """The `register_task_definition` request for the service's one container, listening on `port` (PORT)."""
    environment = {**environment, "PORT": str(port)}
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
                "stopTimeout": shutdown.STOP_TIMEOUT_S,
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
                        "mode": "non-blocking",
                        "max-buffer-size": LOG_BUFFER,
                    },
                },
            }
        ],
        "tags": ecs_tags(tags),
    }


def ecs_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in tags.items()]


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
        lambda: ecs.register_task_definition(
            **{**definition, "tags": [*definition["tags"], {"key": SPEC_TAG, "value": digest}]}
        )["taskDefinition"]["taskDefinitionArn"],
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
    balancer: Balancer | None,
    spot: bool,
    tags: dict[str, str],
) -> dict | None:
    """Create the service, or update it where it differs. Returns the service as AWS describes it.

    Its tasks carry the tags of their task definition (project, model version, image tag: the revision's own)
    and ECS's (cluster, service)."""
    ecs = aws.client("ecs")
    load_balancers = (
        [{"targetGroupArn": balancer.target_group_arn, "containerName": name, "containerPort": port}]
        if balancer
        else []
    )
    balancing = (
        {"loadBalancers": load_balancers, "healthCheckGracePeriodSeconds": shutdown.HEALTH_CHECK_GRACE_S}
        if balancer
        else {}
    )
    tagging = {"propagateTags": "TASK_DEFINITION", "enableECSManagedTags": True}
    service = describe_service(aws, cluster, name)
    if service is None:
        return aws.change(
            f"create ECS service {name} in {cluster} ({desired_count} task(s){' on Fargate Spot' if spot else ''})",
            lambda: ecs.create_service(
                cluster=cluster,
                serviceName=name,
                taskDefinition=task_definition_arn,
                desiredCount=desired_count,
                **({"capacityProviderStrategy": SPOT} if spot else {"launchType": "FARGATE"}),
                deploymentConfiguration=DEPLOYMENT_CONFIGURATION,
                networkConfiguration=network,
                tags=ecs_tags(tags),
                **tagging,
                **balancing,
            )["service"],
        )
    if service["desiredCount"] != desired_count:
        aws.say(
            f"note: deploy.desired_count ({desired_count}) is used when the service is created; autoscaling sets "
            f"the count now ({service['desiredCount']}): to run more tasks, raise deploy.min_tasks"
        )
    differences = service_differences(service, task_definition_arn, network, load_balancers, spot)
    if not differences:
        return service
    capacity = [d for d in differences if d.startswith("capacity")]
    return aws.change(
        f"update ECS service {name}: {', '.join(differences)}",
        lambda: ecs.update_service(
            cluster=cluster,
            service=name,
            taskDefinition=task_definition_arn,
            deploymentConfiguration=DEPLOYMENT_CONFIGURATION,
            networkConfiguration=network,
            **tagging,
            **(balancing or ({"loadBalancers": []} if service.get("loadBalancers") else {})),
            # A new capacity provider needs new tasks: ECS starts them only when told to.
            **(
                {"capacityProviderStrategy": SPOT if spot else ON_DEMAND, "forceNewDeployment": True}
                if capacity
                else {}
            ),
        )["service"],
        planned=service,
    )


def service_differences(
    service: dict, task_definition_arn: str, network: dict, load_balancers: list, spot: bool = False
) -> list:
    """What of the service differs from what is asked. Once created, autoscaling owns the desired count.

    ECS always reports what is compared here; where an API leaves a field out there is nothing to compare."""
    differences = []
    if service["taskDefinition"] != task_definition_arn:
        differences.append(f"task definition {revision(service['taskDefinition'])} -> {revision(task_definition_arn)}")
    if _network(service.get("networkConfiguration")) != _network(network):
        differences.append("network configuration")
    if _targets(service.get("loadBalancers", [])) != _targets(load_balancers):
        differences.append("load balancer")
    elif load_balancers and service.get("healthCheckGracePeriodSeconds", shutdown.HEALTH_CHECK_GRACE_S) != (
        shutdown.HEALTH_CHECK_GRACE_S
    ):
        differences.append(f"health check grace period {shutdown.HEALTH_CHECK_GRACE_S} s")
    reported = service.get("deploymentConfiguration")
    if reported is not None and any(reported.get(key) != value for key, value in DEPLOYMENT_CONFIGURATION.items()):
        differences.append("deployment configuration (circuit breaker with rollback, 100/200%)")
    capacity = _capacity(service)
    if capacity is not None and capacity != (SPOT if spot else ON_DEMAND):
        differences.append(f"capacity {'Fargate Spot' if spot else 'Fargate (on demand)'}")
    if service.get("propagateTags", "TASK_DEFINITION") != "TASK_DEFINITION" or not service.get(
        "enableECSManagedTags", True
    ):
        differences.append("tags propagated to the tasks")
    return differences


def _capacity(service: dict) -> list | None:
    """The service's capacity provider strategy; a FARGATE launch type is the same as on-demand Fargate."""
    strategy = service.get("capacityProviderStrategy")
    if strategy:
        return [{"capacityProvider": item["capacityProvider"], "weight": item.get("weight", 0)} for item in strategy]
    return ON_DEMAND if service.get("launchType") == "FARGATE" else None


def _targets(load_balancers: list) -> list[tuple]:
    return sorted((lb.get("targetGroupArn"), lb.get("containerName"), lb.get("containerPort")) for lb in load_balancers)


def _network(configuration: dict | None) -> tuple:
    vpc = (configuration or {}).get("awsvpcConfiguration", {})
    return (
        tuple(sorted(vpc.get("subnets", []))),
        tuple(sorted(vpc.get("securityGroups", []))),
        vpc.get("assignPublicIp", "DISABLED"),
    )


def ensure_autoscaling(
    aws: Aws,
    cluster: str,
    name: str,
    params,
    balancer: Balancer | None,
    tags: dict[str, str],
) -> None:
    """Between deploy.min_tasks and max_tasks: target tracking on the service's average CPU and, behind a load
    balancer, on the requests each task gets per minute (deploy.requests_per_task). Either can scale out; both
    must agree to scale in."""
    scaling = aws.client("application-autoscaling")
    resource = f"service/{cluster}/{name}"
    target = {"ServiceNamespace": "ecs", "ResourceId": resource, "ScalableDimension": SCALABLE_DIMENSION}
    targets = scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])["ScalableTargets"]
    if not targets:
        aws.change(
            f"scale {name} between {params.min_tasks} and {params.max_tasks} tasks",
            lambda: scaling.register_scalable_target(
                **target, MinCapacity=params.min_tasks, MaxCapacity=params.max_tasks, Tags=tags
            ),
        )
    elif not any(t["MinCapacity"] == params.min_tasks and t["MaxCapacity"] == params.max_tasks for t in targets):
        aws.change(
            f"scale {name} between {params.min_tasks} and {params.max_tasks} tasks",
            lambda: scaling.register_scalable_target(
                **target, MinCapacity=params.min_tasks, MaxCapacity=params.max_tasks
            ),
        )
    cooldowns = {"ScaleOutCooldown": params.scale_out_cooldown_s, "ScaleInCooldown": params.scale_in_cooldown_s}
    wanted = {
        f"{name}-cpu": (
            f"track {params.cpu_target_percent:g}% average CPU on {name}",
            {
                "TargetValue": float(params.cpu_target_percent),
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                **cooldowns,
            },
        )
    }
    if balancer is not None:
        wanted[f"{name}-requests"] = (
            f"track {params.requests_per_task} requests per task per minute on {name}",
            {
                "TargetValue": float(params.requests_per_task),
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "ALBRequestCountPerTarget",
                    "ResourceLabel": balancer.resource_label,
                },
                **cooldowns,
            },
        )
    policies = scaling.describe_scaling_policies(
        ServiceNamespace="ecs", ResourceId=resource, PolicyNames=[f"{name}-cpu", f"{name}-requests"]
    )["ScalingPolicies"]
    current = {policy["PolicyName"]: policy.get("TargetTrackingScalingPolicyConfiguration", {}) for policy in policies}
    for policy_name, (description, configuration) in wanted.items():
        if any(current.get(policy_name, {}).get(key) != value for key, value in configuration.items()):
            aws.change(
                description,
                lambda policy_name=policy_name, configuration=configuration: scaling.put_scaling_policy(
                    **target,
                    PolicyName=policy_name,
                    PolicyType="TargetTrackingScaling",
                    TargetTrackingScalingPolicyConfiguration=configuration,
                ),
            )
    for policy_name in current.keys() - wanted.keys():
        aws.change(
            f"stop tracking requests on {name} (no load balancer)",
            lambda policy_name=policy_name: scaling.delete_scaling_policy(PolicyName=policy_name, **target),
        )
