"""The load balancer in front of the service: an internet-facing Application Load Balancer, its target group
and its listeners, or a target group the user brings (deploy.target_group_arn).

The load balancer spans the tasks' subnets (two zones at least) behind a security group of its own that admits
80 (and 443) from deploy.allowed_cidrs; the tasks' group admits the service port from that group only. The
target group is of type ip (a Fargate task registers by its address) on the service port and checks /readyz.
Port 80 forwards to it, or, with deploy.certificate_arn, redirects to 443, which forwards. As everywhere in
deploy/, each `ensure_*` changes only what differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import botocore.exceptions

from deploy import network, shutdown
from deploy.aws import Aws, error_code
from tweetbot.runtime.errors import UserError

# AWS's recommended policy (its console's default since 2025): TLS 1.3 and 1.2, with hybrid post-quantum key
# exchange for the clients that have it.
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
HEALTH_CHECK = {
    "HealthCheckEnabled": True,
    "HealthCheckProtocol": "HTTP",
    "HealthCheckPort": "traffic-port",
    "HealthCheckPath": shutdown.HEALTH_CHECK_PATH,
    "HealthCheckIntervalSeconds": shutdown.HEALTH_CHECK_INTERVAL_S,
    "HealthCheckTimeoutSeconds": shutdown.HEALTH_CHECK_TIMEOUT_S,
    "HealthyThresholdCount": shutdown.HEALTHY_THRESHOLD,
    "UnhealthyThresholdCount": shutdown.UNHEALTHY_THRESHOLD,
    "Matcher": {"HttpCode": "200"},
}
TARGET_GROUP_ATTRIBUTES = {"deregistration_delay.timeout_seconds": str(shutdown.DEREGISTRATION_DELAY_S)}
# Requests with header fields that are not valid HTTP are dropped, not passed on (AWS Security Hub ELB.4).
LOAD_BALANCER_ATTRIBUTES = {"routing.http.drop_invalid_header_fields.enabled": "true"}


@dataclass(frozen=True)
class Balancer:
    """Where the service's tasks register, and what the world reaches them through."""

    target_group_arn: str | None  # None (and the DNS name a placeholder) when only planned
    load_balancer_arn: str | None
    dns_name: str
    security_groups: tuple[str, ...]  # the load balancer's: the tasks admit the service port from these
    https: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://{self.dns_name}"

    @property
    def resource_label(self) -> str:
        """What request-count scaling names the pair by: app/NAME/ID/targetgroup/NAME/ID."""
        if self.load_balancer_arn is None or self.target_group_arn is None:
            return "(the new load balancer and target group)"
        balancer = self.load_balancer_arn.split(":loadbalancer/", 1)[-1]
        return f"{balancer}/{self.target_group_arn.split(':')[-1]}"


def security_group_name(name: str) -> str:
    return f"{name}-load-balancer"


def ensure(
    aws: Aws, name: str, vpc: str, subnets: list[str], allowed_cidrs: list[str], certificate_arn: str | None, tags
) -> Balancer:
    """The load balancer, its security group, target group and listeners, created or corrected."""
    ports = [80, 443] if certificate_arn else [80]
    group = network.ensure_security_group(
        aws,
        security_group_name(name),
        vpc,
        [network.from_cidrs(port, allowed_cidrs) for port in ports],
        tags,
        purpose=f"the load balancer: {' and '.join(map(str, ports))} from deploy.allowed_cidrs",
    )
    found_balancer, found_group = find(aws, name)
    balancer = _ensure_load_balancer(aws, name, found_balancer, subnets, group, tags)
    target_group = _ensure_target_group(aws, name, found_group, vpc, tags)
    _ensure_listeners(aws, balancer["LoadBalancerArn"], target_group, certificate_arn, tags)
    return Balancer(target_group, balancer["LoadBalancerArn"], balancer["DNSName"], (group,), bool(certificate_arn))


def adopt(elbv2, target_group_arn: str) -> Balancer:
    """The load balancer in front of a target group the user brings (deploy.target_group_arn), as it is."""
    try:
        (group,) = elbv2.describe_target_groups(TargetGroupArns=[target_group_arn])["TargetGroups"]
    except botocore.exceptions.ClientError as error:
        if error_code(error) not in ("TargetGroupNotFound", "ValidationError"):
            raise
        raise UserError(
            f"deploy.target_group_arn {target_group_arn} does not exist (in this region?): fix it"
        ) from None
    if group.get("TargetType") != "ip":
        raise UserError(
            f"target group {group['TargetGroupName']} has targets of type {group.get('TargetType')}: Fargate tasks "
            "register by address, make one of type ip"
        )
    if not group.get("LoadBalancerArns"):
        raise UserError(
            f"target group {group['TargetGroupName']} is behind no load balancer: add a listener rule that "
            "forwards to it"
        )
    arn = group["LoadBalancerArns"][0]
    balancer = elbv2.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"][0]
    listeners = elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]
    https = any(listener["Protocol"] == "HTTPS" for listener in listeners)
    return Balancer(target_group_arn, arn, balancer["DNSName"], tuple(balancer.get("SecurityGroups", [])), https)


def find(aws: Aws, name: str) -> tuple[dict | None, dict | None]:
    """This deployment's load balancer and target group, each None where there is none."""
    elbv2 = aws.client("elbv2")
    return (
        _described(lambda: elbv2.describe_load_balancers(Names=[name])["LoadBalancers"], "LoadBalancerNotFound"),
        _described(lambda: elbv2.describe_target_groups(Names=[name])["TargetGroups"], "TargetGroupNotFound"),
    )


def _described(describe: Callable[[], list], missing: str) -> dict | None:
    try:
        found = describe()
    except botocore.exceptions.ClientError as error:
        if error_code(error) != missing:
            raise
        return None
    return found[0] if found else None


def _ensure_load_balancer(aws: Aws, name: str, balancer: dict | None, subnets: list[str], group: str, tags) -> dict:
    elbv2 = aws.client("elbv2")
    if balancer is None:
        created = aws.change(
            f"create load balancer {name} (internet-facing, {len(subnets)} zones)",
            lambda: elbv2.create_load_balancer(
                Name=name,
                Subnets=subnets,
                SecurityGroups=[group],
                Scheme="internet-facing",
                Type="application",
                IpAddressType="ipv4",
                Tags=_elbv2_tags(tags),
            )["LoadBalancers"][0],
            planned={"LoadBalancerArn": None, "DNSName": f"(the DNS name of load balancer {name})"},
        )
        _ensure_attributes(aws, created["LoadBalancerArn"], name)
        return created
    if balancer.get("Scheme") != "internet-facing":
        raise UserError(
            f"load balancer {name} exists and is {balancer.get('Scheme')}: delete it, or set deploy.name to another"
        )
    arn = balancer["LoadBalancerArn"]
    if sorted(zone["SubnetId"] for zone in balancer.get("AvailabilityZones", [])) != sorted(subnets):
        aws.change(
            f"move load balancer {name} to subnets {', '.join(subnets)}",
            lambda: elbv2.set_subnets(LoadBalancerArn=arn, Subnets=subnets),
        )
    if balancer.get("SecurityGroups") != [group]:
        aws.change(
            f"put load balancer {name} behind security group {security_group_name(name)} only",
            lambda: elbv2.set_security_groups(LoadBalancerArn=arn, SecurityGroups=[group]),
        )
    _ensure_attributes(aws, arn, name)
    return balancer


def _ensure_attributes(aws: Aws, arn: str | None, name: str) -> None:
    elbv2 = aws.client("elbv2")
    current = elbv2.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"] if arn else []
    _correct_attributes(
        aws,
        f"drop requests with invalid header fields at load balancer {name}",
        LOAD_BALANCER_ATTRIBUTES,
        current,
        lambda attributes: elbv2.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=attributes),
    )


def _correct_attributes(aws: Aws, description: str, wanted: dict, current: list, modify: Callable) -> None:
    """Set those of the `wanted` attributes that `current` (a Describe*Attributes answer) does not have."""
    have = {item["Key"]: item["Value"] for item in current}
    wrong = [{"Key": key, "Value": value} for key, value in wanted.items() if have.get(key) != value]
    if wrong:
        aws.change(description, lambda: modify(wrong))


def _ensure_target_group(aws: Aws, name: str, group: dict | None, vpc: str, tags) -> str | None:
    """The target group's ARN (None when only planned). Its port is only a default: ECS registers each task
    with the container's port, and the health check goes to the port traffic goes to."""
    elbv2 = aws.client("elbv2")
    if group is None:
        arn = aws.change(
            f"create target group {name} (type ip, health check {shutdown.HEALTH_CHECK_PATH})",
            lambda: elbv2.create_target_group(
                Name=name,
                Protocol="HTTP",
                ProtocolVersion="HTTP1",
                Port=80,
                VpcId=vpc,
                TargetType="ip",
                Tags=_elbv2_tags(tags),
                **HEALTH_CHECK,
            )["TargetGroups"][0]["TargetGroupArn"],
        )
        current = []
    else:
        arn = group["TargetGroupArn"]
        if group["VpcId"] != vpc:
            raise UserError(
                f"target group {name} is in {group['VpcId']}, the tasks in {vpc}: run `tweetbot destroy` first to "
                "move the deployment to another VPC"
            )
        if any(group.get(key) != value for key, value in HEALTH_CHECK.items()):
            aws.change(
                f"check {shutdown.HEALTH_CHECK_PATH} every {shutdown.HEALTH_CHECK_INTERVAL_S} s in target group {name}",
                lambda: elbv2.modify_target_group(TargetGroupArn=arn, **HEALTH_CHECK),
            )
        current = elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
    _correct_attributes(
        aws,
        f"give a leaving task {shutdown.DEREGISTRATION_DELAY_S} s to finish its requests (target group {name})",
        TARGET_GROUP_ATTRIBUTES,
        current,
        lambda attributes: elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=attributes),
    )
    return arn


def listener_specs(target_group_arn: str | None, certificate_arn: str | None) -> dict[int, dict]:
    """The listeners wanted, by port: what `create_listener` takes, less the load balancer."""
    forward = [{"Type": "forward", "TargetGroupArn": target_group_arn}]
    if not certificate_arn:
        return {80: {"Protocol": "HTTP", "Port": 80, "DefaultActions": forward}}
    redirect = {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}
    return {
        80: {"Protocol": "HTTP", "Port": 80, "DefaultActions": [{"Type": "redirect", "RedirectConfig": redirect}]},
        443: {
            "Protocol": "HTTPS",
            "Port": 443,
            "SslPolicy": TLS_POLICY,
            "Certificates": [{"CertificateArn": certificate_arn}],
            "DefaultActions": forward,
        },
    }


def _ensure_listeners(aws: Aws, balancer_arn: str | None, target_group_arn, certificate_arn, tags) -> None:
    elbv2 = aws.client("elbv2")
    wanted = listener_specs(target_group_arn, certificate_arn)
    existing = {}
    if balancer_arn is not None:
        existing = {
            listener["Port"]: listener
            for listener in elbv2.describe_listeners(LoadBalancerArn=balancer_arn)["Listeners"]
        }
    for port, spec in wanted.items():
        listener = existing.get(port)
        what = _describe_listener(spec)
        if listener is None:
            aws.change(
                f"listen on {port}: {what}",
                lambda spec=spec: elbv2.create_listener(LoadBalancerArn=balancer_arn, Tags=_elbv2_tags(tags), **spec),
            )
        elif _listener_differs(listener, spec):
            aws.change(
                f"change the listener on {port}: {what}",
                lambda listener=listener, spec=spec: elbv2.modify_listener(ListenerArn=listener["ListenerArn"], **spec),
            )
    for port, listener in existing.items():
        if port not in wanted:
            aws.change(
                f"stop listening on {port}",
                lambda listener=listener: elbv2.delete_listener(ListenerArn=listener["ListenerArn"]),
            )


def _describe_listener(spec: dict) -> str:
    action = spec["DefaultActions"][0]
    if action["Type"] == "redirect":
        return f"{spec['Protocol']}, redirect to HTTPS"
    return f"{spec['Protocol']}, forward to the target group" + (f" ({TLS_POLICY})" if "SslPolicy" in spec else "")


def _listener_differs(listener: dict, spec: dict) -> bool:
    if listener.get("Protocol") != spec["Protocol"]:
        return True
    if spec["Protocol"] == "HTTPS" and (
        listener.get("SslPolicy") != spec["SslPolicy"]
        or [c["CertificateArn"] for c in listener.get("Certificates", [])][:1]
        != [c["CertificateArn"] for c in spec["Certificates"]]
    ):
        return True
    return [_action(action) for action in listener.get("DefaultActions", [])] != [
        _action(action) for action in spec["DefaultActions"]
    ]


def _action(action: dict) -> tuple:
    redirect = action.get("RedirectConfig", {})
    return (
        action["Type"],
        action.get("TargetGroupArn"),
        redirect.get("Protocol"),
        redirect.get("Port"),
        redirect.get("StatusCode"),
    )


def _elbv2_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def remove(aws: Aws, name: str, progress: Callable[[str], None]) -> None:
    """This deployment's load balancer (its listeners go with it), then its target group, once what they hold
    has drained: in the order AWS accepts. The security group goes with the tasks' (`run.destroy`)."""
    elbv2 = aws.client("elbv2")
    balancer, group = find(aws, name)
    if group is not None and aws.apply:
        wait_for_draining(elbv2, group["TargetGroupArn"], progress=progress)
    if balancer is not None:
        arn = balancer["LoadBalancerArn"]
        listeners = elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]
        aws.change(
            f"delete load balancer {name} and its {len(listeners)} listener(s)",
            lambda: elbv2.delete_load_balancer(LoadBalancerArn=arn),
        )
        if aws.apply:  # a target group in use by a load balancer cannot go
            elbv2.get_waiter("load_balancers_deleted").wait(
                LoadBalancerArns=[arn], WaiterConfig={"Delay": 5, "MaxAttempts": 60}
            )
    if group is not None:
        aws.change(
            f"delete target group {name}",
            lambda: elbv2.delete_target_group(TargetGroupArn=group["TargetGroupArn"]),
        )


def wait_for_draining(
    elbv2,
    target_group_arn: str,
    timeout_s: float = shutdown.DEREGISTRATION_DELAY_S + 60,
    progress: Callable[[str], None] = print,
    poll_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once no target of the group is draining (finishing the requests it holds)."""
    deadline = clock() + timeout_s
    while True:
        draining = [
            target
            for target in elbv2.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]
            if target["TargetHealth"]["State"] == "draining"
        ]
        if not draining:
            return
        if clock() >= deadline:
            raise UserError(
                f"{len(draining)} target(s) still draining after {timeout_s:g} s: run `tweetbot destroy` again"
            )
        progress(f"waiting for {len(draining)} target(s) to finish their requests")
        sleep(poll_s)


def health(elbv2, target_group_arn: str) -> dict[str, int]:
    """How many of the group's targets are in each state (healthy, initial, draining, unhealthy...)."""
    counts: dict[str, int] = {}
    for target in elbv2.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]:
        state = target["TargetHealth"]["State"]
        counts[state] = counts.get(state, 0) + 1
    return counts
