"""Wait for an ECS rollout to finish, and find where a service without a load balancer answers.

A rollout is done when the deployment that runs the new task definition is the service's PRIMARY one and ECS
marks it COMPLETED (its tasks are running and healthy, behind the load balancer when there is one). Nothing
less counts: an older revision's COMPLETED deployment is the rollout not having started. When the circuit
breaker stops the new deployment ECS marks it FAILED and, with rollback on, starts a new PRIMARY deployment of
the last revision that worked, which the failure names.
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
    task_definition_arn: str,
    timeout_s: float,
    progress: Callable[[str], None] = print,
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """The deployment of `task_definition_arn` once it is PRIMARY and COMPLETED; a failure or the timeout is a
    UserError."""
    deadline = clock() + timeout_s
    target = revision(task_definition_arn)
    seen = False  # a deployment of the target revision appeared (and may since have been replaced)
    last_status = None
    while True:
        deployments = _describe(ecs, cluster, service).get("deployments", [])
        primary = next((d for d in deployments if d["status"] == "PRIMARY"), None)
        if primary is None:
            raise UserError(
                f"ECS service {service} has no PRIMARY deployment ({_listing(deployments)}): tweetbot deploys "
                "through the ECS deployment controller; see the service's events in the ECS console"
            )
        runs_target = [d for d in deployments if d["taskDefinition"] == task_definition_arn]
        ours = primary if primary in runs_target else next(iter(runs_target), None)
        if ours is None:
            if seen:  # it was there and is gone: replaced
                raise UserError(_failure(target, None, primary))
            status = f"waiting for ECS to start deploying {target} (PRIMARY: {_status(primary)})"
        elif ours.get("rolloutState") == "FAILED" or ours is not primary:
            raise UserError(_failure(target, ours, primary))
        else:
            seen, status = True, _status(ours)
        if status != last_status:
            progress(status)
            last_status = status
        if ours is not None and ours.get("rolloutState") == "COMPLETED":
            return ours
        if clock() >= deadline:
            raise UserError(
                f"the rollout of {target} did not finish in {timeout_s:g} s ({status}): see the service's events "
                "in the ECS console, or raise deploy.rollout_timeout_s"
            )
        sleep(poll_s)


def _describe(ecs, cluster: str, service: str) -> dict:
    services = ecs.describe_services(cluster=cluster, services=[service])["services"]
    if not services or services[0]["status"] == "INACTIVE":
        raise UserError(f"ECS service {service} is gone from cluster {cluster}: run the deploy again")
    return services[0]


def _status(deployment: dict) -> str:
    return (
        f"{revision(deployment['taskDefinition'])}: {deployment['runningCount']}/"
        f"{deployment['desiredCount']} running, {deployment['pendingCount']} pending, "
        f"{deployment.get('rolloutState', 'IN_PROGRESS').lower().replace('_', ' ')}"
    )


def _listing(deployments: list[dict]) -> str:
    if not deployments:
        return "no deployments at all"
    return ", ".join(f"{revision(d['taskDefinition'])} {d['status']}" for d in deployments)


def _failure(target: str, ours: dict | None, primary: dict) -> str:
    running = revision(primary["taskDefinition"])
    if ours is not None and ours.get("rolloutState") == "FAILED":
        reason = ours.get("rolloutStateReason") or "no reason given"
        if ours is primary:
            return f"the rollout of {target} failed ({reason}): see the task logs in CloudWatch"
        return (
            f"the rollout of {target} failed ({reason}); the circuit breaker rolled back to {running}: see the "
            "task logs in CloudWatch"
        )
    return f"the rollout of {target} was replaced by a deployment of {running} (another deploy?): run the deploy again"


def revision(task_definition_arn: str) -> str:
    """ "family:3" from a task definition ARN."""
    return task_definition_arn.rsplit("/", 1)[-1]


def public_endpoint(ecs, ec2, cluster: str, service: str, task_definition_arn: str, port: int) -> str | None:
    """The URL of the service without a load balancer: a running task's public IP (or None yet)."""
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
