"""The rollout wait and the public task's endpoint, on canned ECS/EC2 answers (botocore's Stubber).

moto starts no tasks, so its rollouts never move: what ECS answers while a rollout completes, fails with the
circuit breaker's rollback, or hangs, is replayed here through real clients with their request validation.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from deploy import rollout
from tweetbot.runtime.errors import UserError

CLUSTER, SERVICE = "tweetbot", "tweetbot"
ARN = "arn:aws:ecs:eu-west-1:123456789012:task-definition/tweetbot:{}"


def client(service: str):
    return boto3.client(service, region_name="eu-west-1", aws_access_key_id="testing", aws_secret_access_key="testing")


def deployment(id_: str, revision: int, status: str, state: str, running: int, pending: int = 0, reason=None):
    answer = {
        "id": id_,
        "status": status,
        "taskDefinition": ARN.format(revision),
        "desiredCount": 2,
        "runningCount": running,
        "pendingCount": pending,
        "rolloutState": state,
    }
    if reason:
        answer["rolloutStateReason"] = reason
    return answer


def services_answer(*deployments) -> dict:
    return {"services": [{"serviceName": SERVICE, "status": "ACTIVE", "deployments": list(deployments)}]}


class FakeClock:
    """Time that moves only when the wait sleeps, so a timeout takes no real time."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def wait(ecs, clock: FakeClock, timeout_s: float = 600, target: int = 5):
    lines: list[str] = []
    result = rollout.wait_for_rollout(
        ecs, CLUSTER, SERVICE, ARN.format(target), timeout_s, progress=lines.append, clock=clock, sleep=clock.sleep
    )
    return result, lines


def test_a_rollout_that_completes_returns_its_deployment_and_reports_progress():
    ecs = client("ecs")
    expected = {"cluster": CLUSTER, "services": [SERVICE]}
    with Stubber(ecs) as stub:
        stub.add_response(
            "describe_services",
            services_answer(
                deployment("new", 5, "PRIMARY", "IN_PROGRESS", 0, 2),
                deployment("old", 4, "ACTIVE", "COMPLETED", 2),
            ),
            expected,
        )
        stub.add_response(
            "describe_services",
            services_answer(
                deployment("new", 5, "PRIMARY", "IN_PROGRESS", 1, 1),
                deployment("old", 4, "ACTIVE", "COMPLETED", 2),
            ),
            expected,
        )
        stub.add_response(
            "describe_services", services_answer(deployment("new", 5, "PRIMARY", "COMPLETED", 2)), expected
        )
        done, lines = wait(ecs, clock := FakeClock())
        stub.assert_no_pending_responses()
    assert done["id"] == "new" and done["rolloutState"] == "COMPLETED"
    assert lines == [
        "tweetbot:5: 0/2 running, 2 pending, in progress",
        "tweetbot:5: 1/2 running, 1 pending, in progress",
        "tweetbot:5: 2/2 running, 0 pending, completed",
    ]
    assert clock.sleeps == [rollout.POLL_S, rollout.POLL_S]


def test_a_failed_rollout_names_the_revision_the_circuit_breaker_rolled_back_to():
    ecs = client("ecs")
    reason = "ECS deployment circuit breaker: tasks failed to start."
    with Stubber(ecs) as stub:
        stub.add_response(
            "describe_services",
            services_answer(
                deployment("new", 5, "PRIMARY", "IN_PROGRESS", 0, 2),
                deployment("old", 4, "ACTIVE", "COMPLETED", 2),
            ),
        )
        # The breaker trips: ECS starts a deployment of the last good revision, which becomes PRIMARY.
        stub.add_response(
            "describe_services",
            services_answer(
                deployment("rollback", 4, "PRIMARY", "IN_PROGRESS", 2),
                deployment("new", 5, "ACTIVE", "FAILED", 0, reason=reason),
            ),
        )
        with pytest.raises(UserError) as failure:
            wait(ecs, FakeClock())
    message = str(failure.value)
    assert "rollout of tweetbot:5 failed" in message
    assert reason in message
    assert "rolled back to tweetbot:4" in message


def test_a_failed_rollout_without_rollback_says_so():
    ecs = client("ecs")
    with Stubber(ecs) as stub:
        stub.add_response(
            "describe_services",
            services_answer(deployment("only", 1, "PRIMARY", "FAILED", 0, reason="tasks failed to start")),
        )
        with pytest.raises(UserError, match="rollout of tweetbot:1 failed") as failure:
            wait(ecs, FakeClock(), target=1)
    assert "rolled back" not in str(failure.value)


def test_a_rollout_that_does_not_finish_in_time_is_an_error_naming_the_timeout():
    ecs = client("ecs")
    clock = FakeClock()
    stuck = services_answer(deployment("new", 5, "PRIMARY", "IN_PROGRESS", 0, 2))
    polls = int(60 / rollout.POLL_S) + 1  # at t = 0, 10, ..., 60 s
    with Stubber(ecs) as stub:
        for _ in range(polls):
            stub.add_response("describe_services", stuck)
        with pytest.raises(UserError, match="did not finish in 60 s") as failure:
            wait(ecs, clock, timeout_s=60)
        stub.assert_no_pending_responses()
    assert "rollout_timeout_s" in str(failure.value)
    assert clock.now == 60


def test_a_deleted_service_stops_the_wait():
    ecs = client("ecs")
    with Stubber(ecs) as stub:
        stub.add_response("describe_services", {"services": [], "failures": [{"arn": "x", "reason": "MISSING"}]})
        with pytest.raises(UserError, match="is gone from cluster"):
            wait(ecs, FakeClock())


def test_a_service_without_a_primary_deployment_is_reported_not_a_crash():
    ecs = client("ecs")
    with Stubber(ecs) as stub:
        stub.add_response("describe_services", services_answer(deployment("old", 4, "ACTIVE", "COMPLETED", 2)))
        with pytest.raises(UserError, match="no PRIMARY deployment .tweetbot:4 ACTIVE.") as failure:
            wait(ecs, FakeClock())
    assert "ECS console" in str(failure.value)
    with Stubber(ecs) as stub:
        stub.add_response("describe_services", services_answer())
        with pytest.raises(UserError, match="no PRIMARY deployment .no deployments at all."):
            wait(ecs, FakeClock())


def test_the_previous_revisions_completed_deployment_is_not_the_rollout():
    """ECS has not started deploying the new revision yet: its predecessor's COMPLETED is no success."""
    ecs = client("ecs")
    clock = FakeClock()
    previous = services_answer(deployment("old", 1, "PRIMARY", "COMPLETED", 2))
    with Stubber(ecs) as stub:
        for _ in range(int(30 / rollout.POLL_S) + 1):
            stub.add_response("describe_services", previous)
        with pytest.raises(UserError, match="rollout of tweetbot:2 did not finish in 30 s") as failure:
            wait(ecs, clock, timeout_s=30, target=2)
        stub.assert_no_pending_responses()
    assert "waiting for ECS to start deploying tweetbot:2 (PRIMARY: tweetbot:1: 2/2 running" in str(failure.value)


def test_the_new_revision_must_be_primary_as_well_as_completed():
    ecs = client("ecs")
    lines: list[str] = []
    with Stubber(ecs) as stub:
        stub.add_response("describe_services", services_answer(deployment("old", 1, "PRIMARY", "COMPLETED", 2)))
        stub.add_response(
            "describe_services",
            services_answer(
                deployment("new", 2, "PRIMARY", "IN_PROGRESS", 1, 1), deployment("old", 1, "ACTIVE", "COMPLETED", 1)
            ),
        )
        stub.add_response("describe_services", services_answer(deployment("new", 2, "PRIMARY", "COMPLETED", 2)))
        done = rollout.wait_for_rollout(ecs, CLUSTER, SERVICE, ARN.format(2), 600, lines.append, sleep=lambda s: None)
    assert done["id"] == "new"
    assert lines[0].startswith("waiting for ECS to start deploying tweetbot:2")
    assert lines[1:] == [
        "tweetbot:2: 1/2 running, 1 pending, in progress",
        "tweetbot:2: 2/2 running, 0 pending, completed",
    ]

    # A newer deploy took over: the revision we wait for is COMPLETED but no longer PRIMARY.
    with Stubber(ecs) as stub:
        stub.add_response(
            "describe_services",
            services_answer(
                deployment("newer", 3, "PRIMARY", "IN_PROGRESS", 0, 2), deployment("new", 2, "ACTIVE", "COMPLETED", 2)
            ),
        )
        with pytest.raises(UserError, match="rollout of tweetbot:2 was replaced by a deployment of tweetbot:3"):
            wait(ecs, FakeClock(), target=2)


def test_the_endpoint_is_the_running_tasks_public_ip_found_through_its_network_interface():
    ecs, ec2 = client("ecs"), client("ec2")
    task_arn = "arn:aws:ecs:eu-west-1:123456789012:task/tweetbot/abc"
    with Stubber(ecs) as ecs_stub, Stubber(ec2) as ec2_stub:
        ecs_stub.add_response(
            "list_tasks",
            {"taskArns": [task_arn]},
            {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "RUNNING"},
        )
        ecs_stub.add_response(
            "describe_tasks",
            {
                "tasks": [
                    {
                        "taskArn": task_arn,
                        "taskDefinitionArn": ARN.format(5),
                        "lastStatus": "RUNNING",
                        "attachments": [
                            {
                                "type": "ElasticNetworkInterface",
                                "details": [
                                    {"name": "subnetId", "value": "subnet-1"},
                                    {"name": "networkInterfaceId", "value": "eni-0abc"},
                                ],
                            }
                        ],
                    }
                ]
            },
            {"cluster": CLUSTER, "tasks": [task_arn]},
        )
        ec2_stub.add_response(
            "describe_network_interfaces",
            {"NetworkInterfaces": [{"NetworkInterfaceId": "eni-0abc", "Association": {"PublicIp": "203.0.113.7"}}]},
            {"NetworkInterfaceIds": ["eni-0abc"]},
        )
        url = rollout.public_endpoint(ecs, ec2, CLUSTER, SERVICE, ARN.format(5), 8080)
    assert url == "http://203.0.113.7:8080"


def test_tasks_of_an_older_revision_give_no_endpoint():
    ecs, ec2 = client("ecs"), client("ec2")
    task_arn = "arn:aws:ecs:eu-west-1:123456789012:task/tweetbot/old"
    with Stubber(ecs) as stub:
        stub.add_response("list_tasks", {"taskArns": [task_arn]})
        stub.add_response(
            "describe_tasks",
            {"tasks": [{"taskArn": task_arn, "taskDefinitionArn": ARN.format(4), "lastStatus": "RUNNING"}]},
        )
        assert rollout.public_endpoint(ecs, ec2, CLUSTER, SERVICE, ARN.format(5), 8080) is None
