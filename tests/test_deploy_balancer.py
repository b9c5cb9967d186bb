"""The load balancer's behaviour that moto cannot show, on canned answers in AWS's documented shapes (botocore's
Stubber, which also checks each request against the API): targets draining before a destroy, target health,
and a target group the user brings.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from deploy import balancer
from tweetbot.runtime.errors import UserError

GROUP = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/tweetbot/0123456789abcdef"
BALANCER = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/tweetbot/fedcba9876543210"


def client(service: str):
    return boto3.client(service, region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing")


def targets(*states: str) -> dict:
    """DescribeTargetHealth's answer for ip targets in these states."""
    reasons = {"draining": "Target.DeregistrationInProgress", "initial": "Elb.RegistrationInProgress"}
    return {
        "TargetHealthDescriptions": [
            {
                "Target": {"Id": f"10.0.1.{index}", "Port": 8080, "AvailabilityZone": "eu-west-1a"},
                "HealthCheckPort": "8080",
                "TargetHealth": {"State": state, **({"Reason": reasons[state]} if state in reasons else {})},
            }
            for index, state in enumerate(states, start=10)
        ]
    }


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_draining_is_waited_for_until_no_target_is_left_finishing_requests():
    elbv2, clock, lines = client("elbv2"), FakeClock(), []
    with Stubber(elbv2) as stub:
        for answer in (targets("draining", "draining"), targets("draining"), targets()):
            stub.add_response("describe_target_health", answer, {"TargetGroupArn": GROUP})
        balancer.wait_for_draining(elbv2, GROUP, progress=lines.append, clock=clock, sleep=clock.sleep)
        stub.assert_no_pending_responses()
    assert lines == [
        "waiting for 2 target(s) to finish their requests",
        "waiting for 1 target(s) to finish their requests",
    ]
    assert clock.now == 10


def test_targets_that_never_finish_draining_stop_the_destroy_with_one_line():
    elbv2, clock = client("elbv2"), FakeClock()
    with Stubber(elbv2) as stub:
        for _ in range(4):
            stub.add_response("describe_target_health", targets("healthy", "draining"))
        with pytest.raises(UserError, match=r"1 target\(s\) still draining after 15 s: run `tweetbot destroy` again"):
            balancer.wait_for_draining(
                elbv2, GROUP, timeout_s=15, progress=lambda _: None, clock=clock, sleep=clock.sleep
            )


def test_target_health_is_counted_by_state():
    elbv2 = client("elbv2")
    with Stubber(elbv2) as stub:
        stub.add_response("describe_target_health", targets("healthy", "healthy", "initial", "draining"))
        assert balancer.health(elbv2, GROUP) == {"healthy": 2, "initial": 1, "draining": 1}


def test_an_adopted_target_group_gives_its_load_balancers_name_groups_and_scheme():
    elbv2 = client("elbv2")
    with Stubber(elbv2) as stub:
        stub.add_response(
            "describe_target_groups",
            {
                "TargetGroups": [
                    {
                        "TargetGroupArn": GROUP,
                        "TargetGroupName": "tweetbot",
                        "TargetType": "ip",
                        "LoadBalancerArns": [BALANCER],
                    }
                ]
            },
            {"TargetGroupArns": [GROUP]},
        )
        stub.add_response(
            "describe_load_balancers",
            {
                "LoadBalancers": [
                    {
                        "LoadBalancerArn": BALANCER,
                        "DNSName": "tweetbot-1.eu-west-1.elb.amazonaws.com",
                        "SecurityGroups": ["sg-0a1b2c3d"],
                    }
                ]
            },
            {"LoadBalancerArns": [BALANCER]},
        )
        stub.add_response(
            "describe_listeners",
            {"Listeners": [{"Port": 443, "Protocol": "HTTPS"}, {"Port": 80, "Protocol": "HTTP"}]},
            {"LoadBalancerArn": BALANCER},
        )
        adopted = balancer.adopt(elbv2, GROUP)
    assert adopted.url == "https://tweetbot-1.eu-west-1.elb.amazonaws.com"
    assert adopted.security_groups == ("sg-0a1b2c3d",)
    assert adopted.resource_label == "app/tweetbot/fedcba9876543210/targetgroup/tweetbot/0123456789abcdef"


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"TargetType": "instance", "LoadBalancerArns": [BALANCER]}, "has targets of type instance: Fargate tasks"),
        ({"TargetType": "ip", "LoadBalancerArns": []}, "is behind no load balancer: add a listener rule"),
    ],
)
def test_a_target_group_that_cannot_take_the_tasks_is_refused(group, message):
    elbv2 = client("elbv2")
    with Stubber(elbv2) as stub:
        stub.add_response(
            "describe_target_groups",
            {"TargetGroups": [{"TargetGroupArn": GROUP, "TargetGroupName": "theirs", **group}]},
        )
        with pytest.raises(UserError, match=message):
            balancer.adopt(elbv2, GROUP)
