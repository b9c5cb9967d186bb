"""What AWS would refuse is refused at plan time: one line naming the setting and the fix, before any AWS call.

No server is needed: a check that passed would make its first call to an endpoint where nothing listens, and
the tests see that no call was made at all.
"""

from __future__ import annotations

import pytest

from deploy import checks, run
from tests.aws import FAKE_AWS_ENV, counting_session, layer, patched_environ, write_image
from tests.live_service import free_port
from tweetbot import params
from tweetbot.runtime.errors import UserError

CERTIFICATE = "arn:aws:acm:{}:123456789012:certificate/0f2d0e0c-1a2b-4c3d-8e9f-0a1b2c3d4e5f"


@pytest.fixture
def image(tmp_path):
    write_image(tmp_path, [layer({"app/a.txt": b"a"})])
    return tmp_path


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"cpu": 256, "memory": 4096},
            "deploy.memory 4096 does not go with deploy.cpu 256: Fargate allows 512, 1024 or 2048 MiB with 256 CPU "
            "units",
        ),
        (
            {"cpu": 1024, "memory": 1024},
            "deploy.memory 1024 does not go with deploy.cpu 1024: Fargate allows 2048 to 8192 in steps of 1024 MiB "
            "with 1024 CPU units",
        ),
        ({"cpu": 300}, "deploy.cpu 300 is not a Fargate size: use one of 256, 512, 1024, 2048, 4096, 8192 or 16384"),
        ({"port": 80}, "deploy.port 80 cannot be the service's port: use 1024 to 65535"),
        ({"port": 70000}, "deploy.port 70000 cannot be the service's port: use 1024 to 65535"),
        ({"min_tasks": 0, "desired_count": 0}, "deploy.min_tasks 0: at least one task must run"),
        ({"min_tasks": 3, "max_tasks": 2, "desired_count": 3}, "deploy.max_tasks 2 is below deploy.min_tasks 3"),
        ({"desired_count": 5, "max_tasks": 4}, "deploy.desired_count 5 must lie between deploy.min_tasks 1 and"),
        (
            {"certificate_arn": CERTIFICATE.format("us-east-1")},
            "deploy.certificate_arn is in us-east-1, the load balancer in eu-west-1: a load balancer takes "
            "certificates of its own region only",
        ),
        ({"certificate_arn": "my-cert"}, "deploy.certificate_arn 'my-cert' is not an ACM certificate ARN"),
        (
            {"load_balancer": False, "certificate_arn": CERTIFICATE.format("eu-west-1")},
            "deploy.certificate_arn needs the load balancer",
        ),
        ({"allowed_cidrs": ["10.0.0.300/8"]}, "deploy.allowed_cidrs: '10.0.0.300/8' is not an IPv4 network"),
        ({"allowed_cidrs": ["::/0"]}, "deploy.allowed_cidrs: ::/0 is IPv6"),
        ({"name": "Tweet_Bot"}, "deploy.name 'Tweet_Bot' cannot name the resources"),
        (
            {"name": "a-very-long-name-for-a-bot-that-tweets"},
            "deploy.name 'a-very-long-name-for-a-bot-that-tweets' cannot name the resources: use 2 to 32 lowercase",
        ),
        ({"log_retention_days": 31}, "deploy.log_retention_days 31 is not a period CloudWatch Logs keeps logs for"),
        ({"cpu_target_percent": 0}, "deploy.cpu_target_percent 0 is not a CPU share: use 1 to 100"),
        ({"security_groups": ["sg-1"]}, "deploy.security_groups needs deploy.subnets too"),
    ],
)
def test_a_setting_aws_would_refuse_is_one_line_before_any_call(image, values, message):
    session, calls = counting_session()
    settings = params.from_mapping("deploy", values)
    nowhere = f"http://127.0.0.1:{free_port()}"
    with patched_environ({**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": nowhere}), pytest.raises(UserError) as refused:
        run.deploy(settings, image / "image", image / "image.json", None, apply=False, session=session)
    assert str(refused.value).startswith(f"params.yaml: {message}")
    assert "\n" not in str(refused.value)
    assert calls == []


def test_spot_is_refused_on_arm64_where_fargate_has_none():
    settings = params.from_mapping("deploy", {"spot": True})
    with pytest.raises(UserError, match="deploy.spot: Fargate Spot does not run ARM64 tasks"):
        checks.check(settings, "eu-west-1", "ARM64")
    checks.check(settings, "eu-west-1", "X86_64")


def test_the_defaults_and_every_fargate_size_pass():
    checks.check(params.from_mapping("deploy", {}), "eu-west-1", "X86_64")
    for cpu, memories in checks.FARGATE_MEMORY.items():
        for memory in memories:
            checks.check(params.from_mapping("deploy", {"cpu": cpu, "memory": memory}), "eu-west-1", "X86_64")
    certificate = {"certificate_arn": CERTIFICATE.format("eu-west-1")}
    checks.check(params.from_mapping("deploy", certificate), "eu-west-1", "X86_64")
