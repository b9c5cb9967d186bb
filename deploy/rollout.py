"""Wait for an ECS rollout to finish, and find where the service answers.

A rollout is the service's PRIMARY deployment when the wait starts. ECS marks it COMPLETED once the new tasks
are healthy, or FAILED when the circuit breaker stops it; with rollback on, ECS then starts a new PRIMARY
deployment of the last revision that worked, which the failure names.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tweetbot.runtime.errors import UserError

POLL_S = 10.0


def wait_for_rollout(
    ecs,
    cluster: str,
    service: str,
    timeout_s: float,
    progress: Callable[[str], None] = print,
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """The PRIMARY deployment once its rollout COMPLETED; a FAILED rollout or the timeout is a UserError."""
    deadline = clock() + timeout_s
    ours = None
    last_status = None
    while True:
        deployments = _describe(ecs, cluster, service)["deployments"]
        primary = next(d for d in deployments if d["status"] == "PRIMARY")
        ours = ours or primary["id"]
        deployment = next((d for d in deployments if d["id"] == ours), None)
        if deployment is None or deployment.get("rolloutState") == "FAILED":
            raise UserError(_failure(deployment, primary, ours))
        status = (
            f"{revision(deployment['taskDefinition'])}: {deployment['runningCount']}/"
            f"{deployment['desiredCount']} running, {deployment['pendingCount']} pending, "
            f"{deployment.get('rolloutState', 'IN_PROGRESS').lower().replace('_', ' ')}"
        )
        if status != last_status:
            progress(status)
            last_status = status
        if deployment.get("rolloutState") == "COMPLETED":
            return deployment
        if clock() >= deadline:
            raise UserError(
                f"the rollout of {revision(deployment['taskDefinition'])} did not finish in {timeout_s:g} s "
                f"({status}): see the service's events in the ECS console, or raise deploy.rollout_timeout_s"
            )
        sleep(poll_s)


def _describe(ecs, cluster: str, service: str) -> dict:
    services = ecs.describe_services(cluster=cluster, services=[service])["services"]
    if not services or services[0]["status"] == "INACTIVE":
        raise UserError(f"ECS service {service} is gone from cluster {cluster}: run the deploy again")
    return services[0]


def _failure(deployment: dict | None, primary: dict, ours: str) -> str:
    failed = revision(deployment["taskDefinition"]) if deployment else f"deployment {ours}"
    reason = (deployment or {}).get("rolloutStateReason") or "replaced by another deployment"
    if primary["id"] != ours:
        return (
            f"the rollout of {failed} failed ({reason}); the circuit breaker rolled back to "
            f"{revision(primary['taskDefinition'])}: see the task logs in CloudWatch"
        )
    return f"the rollout of {failed} failed ({reason}): see the task logs in CloudWatch"


def revision(task_definition_arn: str) -> str:
    """ "family:3" from a task definition ARN."""
    return task_definition_arn.rsplit("/", 1)[-1]


def endpoint(
    ecs,
    ec2,
    elbv2,
    cluster: str,
    service: str,
    task_definition_arn: str,
    port: int,
    target_group_arn: str | None,
) -> str | None:
    """The URL the service answers on: its load balancer's, or a running task's public IP (or None yet)."""
    if target_group_arn:
        return _load_balancer_url(elbv2, target_group_arn)
    task_arns = ecs.list_tasks(cluster=cluster, serviceName=service, desiredStatus="RUNNING")["taskArns"]
    if not task_arns:
        return None
    tasks = ecs.describe_tasks(cluster=cluster, tasks=task_arns)["tasks"]
    interfaces = [
        detail["value"]
        for task in tasks
        if task["taskDefinitionArn"] == task_definition_arn and task.get("lastStatus") == "RUNNING"
        for attachment in task.get("attachments", [])
        if attachment["type"] == "ElasticNetworkInterface"
        for detail in attachment["details"]
        if detail["name"] == "networkInterfaceId"
    ]
    if not interfaces:
        return None
    found = ec2.describe_network_interfaces(NetworkInterfaceIds=interfaces)["NetworkInterfaces"]
    addresses = sorted(i["Association"]["PublicIp"] for i in found if i.get("Association", {}).get("PublicIp"))
    return f"http://{addresses[0]}:{port}" if addresses else None


def _load_balancer_url(elbv2, target_group_arn: str) -> str | None:
    groups = elbv2.describe_target_groups(TargetGroupArns=[target_group_arn])["TargetGroups"]
    balancers = groups[0].get("LoadBalancerArns", []) if groups else []
    if not balancers:
        return None
    balancer = elbv2.describe_load_balancers(LoadBalancerArns=balancers[:1])["LoadBalancers"][0]
    listeners = elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    scheme = "https" if any(listener["Protocol"] == "HTTPS" for listener in listeners) else "http"
    return f"{scheme}://{balancer['DNSName']}"
