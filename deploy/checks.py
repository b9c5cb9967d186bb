"""What AWS would refuse later, checked before the first call.

`tweetbot plan` and the deploy stage stop here with one line naming the setting and the fix, so a mistake in
params.yaml `deploy:` costs nothing: no repository pushed, no load balancer half made.
"""

from __future__ import annotations

import ipaddress
import re

from tweetbot.runtime.errors import UserError

# The task sizes Fargate runs: CPU units -> the memory (MiB) it accepts with them (AWS, "Task CPU and memory").
FARGATE_MEMORY = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}
# The periods CloudWatch Logs keeps logs for (PutRetentionPolicy).
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
# Every resource is named after deploy.name: what ECR (lowercase, no doubled separators) and a load balancer or
# target group (at most 32 characters, letters, digits and hyphens) all accept.
NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
CERTIFICATE_ARN = re.compile(r"arn:aws[a-z-]*:acm:(?P<region>[a-z0-9-]+):\d{12}:certificate/[0-9a-f-]+")
UNPRIVILEGED_PORTS = range(1024, 65536)  # the image runs the service as a user that cannot bind below 1024


def check(params, region: str, architecture: str) -> None:
    """Raise a UserError for the first setting AWS would refuse (or that could not work)."""
    for problem in _problems(params, region, architecture):
        raise UserError(f"params.yaml: {problem}")


def _problems(params, region: str, architecture: str):
    name = params.name
    if not (2 <= len(name) <= 32 and NAME.fullmatch(name)) or name.startswith("internal-"):
        yield (
            f"deploy.name {name!r} cannot name the resources: use 2 to 32 lowercase letters, digits and single "
            "hyphens, e.g. tweetbot"
        )
    if params.cpu not in FARGATE_MEMORY:
        yield f"deploy.cpu {params.cpu} is not a Fargate size: use one of {_choices(FARGATE_MEMORY)} CPU units"
    elif params.memory not in FARGATE_MEMORY[params.cpu]:
        yield (
            f"deploy.memory {params.memory} does not go with deploy.cpu {params.cpu}: Fargate allows "
            f"{_memory_choices(FARGATE_MEMORY[params.cpu])} MiB with {params.cpu} CPU units"
        )
    if params.port not in UNPRIVILEGED_PORTS:
        yield (
            f"deploy.port {params.port} cannot be the service's port: use 1024 to 65535 (the service does not run "
            "as root; the load balancer listens on 80 and 443)"
        )
    if params.min_tasks < 1:
        yield f"deploy.min_tasks {params.min_tasks}: at least one task must run to answer: use 1 or more"
    elif params.max_tasks < params.min_tasks:
        yield f"deploy.max_tasks {params.max_tasks} is below deploy.min_tasks {params.min_tasks}: raise max_tasks"
    elif not params.min_tasks <= params.desired_count <= params.max_tasks:
        yield (
            f"deploy.desired_count {params.desired_count} must lie between deploy.min_tasks {params.min_tasks} "
            f"and deploy.max_tasks {params.max_tasks}: fix one of them"
        )
    if not 1 <= params.cpu_target_percent <= 100:
        yield f"deploy.cpu_target_percent {params.cpu_target_percent:g} is not a CPU share: use 1 to 100"
    if params.requests_per_task < 1:
        yield f"deploy.requests_per_task {params.requests_per_task}: use 1 or more requests per minute per task"
    for key in ("scale_out_cooldown_s", "scale_in_cooldown_s"):
        if getattr(params, key) < 0:
            yield f"deploy.{key} {getattr(params, key)} is negative: use 0 or more seconds"
    if params.log_retention_days not in LOG_RETENTION_DAYS:
        yield (
            f"deploy.log_retention_days {params.log_retention_days} is not a period CloudWatch Logs keeps logs "
            f"for: use one of {', '.join(map(str, LOG_RETENTION_DAYS))}"
        )
    if params.rollout_timeout_s <= 0:
        yield f"deploy.rollout_timeout_s {params.rollout_timeout_s:g}: use a positive number of seconds"
    yield from _network_problems(params)
    yield from _balancer_problems(params, region)
    if params.spot and architecture == "ARM64":
        yield (
            "deploy.spot: Fargate Spot does not run ARM64 tasks: set deploy.spot to false, or build for "
            "linux/amd64 (image.platform)"
        )


def _network_problems(params):
    if params.security_groups and not params.subnets:
        yield "deploy.security_groups needs deploy.subnets too: set both, or neither"
    if not params.allowed_cidrs:
        yield "deploy.allowed_cidrs is empty: nobody could reach the service; 0.0.0.0/0 lets anyone in"
    for cidr in params.allowed_cidrs:
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError:
            yield f"deploy.allowed_cidrs: {cidr!r} is not an IPv4 network: write it like 203.0.113.0/24"
            continue
        if network.version != 4:
            yield f"deploy.allowed_cidrs: {cidr} is IPv6; the load balancer and tasks have IPv4 addresses only"


def _balancer_problems(params, region: str):
    if not params.load_balancer:
        for key in ("target_group_arn", "certificate_arn"):
            if getattr(params, key):
                yield f"deploy.{key} needs the load balancer: set deploy.load_balancer to true, or remove {key}"
        return
    arn = params.certificate_arn
    if arn is None:
        return
    if params.target_group_arn:
        yield (
            "deploy.certificate_arn with deploy.target_group_arn: the listeners of a load balancer you bring are "
            "yours to configure: remove certificate_arn"
        )
    match = CERTIFICATE_ARN.fullmatch(arn)
    if match is None:
        yield (
            f"deploy.certificate_arn {arn!r} is not an ACM certificate ARN "
            "(arn:aws:acm:REGION:ACCOUNT:certificate/ID): copy it from the ACM console"
        )
    elif match["region"] != region:
        yield (
            f"deploy.certificate_arn is in {match['region']}, the load balancer in {region}: a load balancer "
            f"takes certificates of its own region only: request or import one in ACM in {region}"
        )


def _choices(values) -> str:
    values = [str(value) for value in values]
    return ", ".join(values[:-1]) + " or " + values[-1]


def _memory_choices(memory: tuple[int, ...]) -> str:
    if len(memory) <= 4:
        return _choices(memory)
    return f"{memory[0]} to {memory[-1]} in steps of {memory[1] - memory[0]}"
