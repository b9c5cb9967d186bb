"""The AWS session a deploy works through: clients from the standard credential chain, and its changes.

Credentials and region come only from the standard AWS chain (environment, shared config and credentials
files, SSO, web identity in CI, instance and container roles); tweetbot never reads or stores a key. Every
mutating call goes through `Aws.change`, which makes it, or, when planning, only lists it: so `tweetbot plan`
runs the same code as a deploy and changes nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from tweetbot.runtime.errors import UserError

T = TypeVar("T")

# An endpoint that does not answer is an error in seconds, not after botocore's default minute-long connect
# timeout and legacy retries: AWS connects in milliseconds, and three attempts ride out a blip or a throttle.
CLIENT_CONFIG = botocore.config.Config(connect_timeout=5, retries={"mode": "standard", "max_attempts": 3})
UNREACHABLE = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)

# AWS names its read-only operations with these verbs; everything else changes something.
READ_ONLY_PREFIXES = ("Describe", "List", "Get", "BatchCheck", "BatchGet")


def is_mutating(operation: str) -> bool:
    """True for an operation that changes something, e.g. "CreateService" (not "DescribeServices")."""
    return not operation.startswith(READ_ONLY_PREFIXES)


def error_code(error: botocore.exceptions.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def unreachable(error: botocore.exceptions.BotoCoreError) -> UserError:
    """One line for an endpoint that cannot be reached: which endpoint, what happened, what to do."""
    endpoint = error.kwargs.get("endpoint_url", "AWS")
    cause = str(error.kwargs.get("error", error)).lower()
    if isinstance(error, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError):
        what = "timed out"
    elif "refused" in cause:
        what = "connection refused"
    elif any(words in cause for words in ("name or service not known", "nodename nor servname", "name resolution")):
        what = "no such host"
    elif isinstance(error, botocore.exceptions.ConnectionClosedError):
        what = "connection closed"
    else:
        what = "no connection"
    if os.environ.get("AWS_ENDPOINT_URL"):
        fix = "AWS_ENDPOINT_URL sends every call there: start what it names (make moto) or unset it to use AWS"
    else:
        fix = "check the network (a proxy? HTTPS_PROXY) and the region"
    return UserError(f"cannot reach {endpoint} ({what}): {fix}")


class Aws:
    """Clients of one account and region, the record of the calls made, and the changes made or planned."""

    def __init__(
        self,
        region: str | None = None,
        apply: bool = True,
        session: boto3.Session | None = None,
        say: Callable[[str], None] | None = None,
    ):
        try:
            # botocore reads AWS_DEFAULT_REGION; the other AWS tools and SDKs also read AWS_REGION.
            self.session = session or boto3.Session(region_name=region or os.environ.get("AWS_REGION"))
        except botocore.exceptions.ProfileNotFound as error:
            raise UserError(f"{error}: set AWS_PROFILE to a profile in ~/.aws/config") from None
        if not self.session.region_name:
            raise UserError("no AWS region: set AWS_REGION (or `region:` in the deploy: section of params.yaml)")
        if self.session.get_credentials() is None:
            raise UserError(
                "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or run where a role provides them (CI: OIDC)"
            )
        self.region: str = self.session.region_name
        self.apply = apply
        self.changes: list[str] = []
        self.calls: list[str] = []  # "ecs.CreateService", in the order made
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._clients: dict[str, Any] = {}
        self._identity: dict[str, str] | None = None

    def client(self, service: str):
        if service not in self._clients:
            client = self.session.client(service, config=CLIENT_CONFIG)
            client.meta.events.register("before-call", self._record)
            self._clients[service] = client
        return self._clients[service]

    def _record(self, model, **_) -> None:
        self.calls.append(f"{model.service_model.service_name}.{model.name}")

    @property
    def mutating_calls(self) -> list[str]:
        return [call for call in self.calls if is_mutating(call.split(".", 1)[1])]

    def change(self, description: str, action: Callable[[], T], planned: T = None) -> T:
        """Make a change (`action()`), or when planning only list it and return `planned` in its place."""
        self.changes.append(description)
        self._say(f"{'+' if self.apply else 'would'} {description}")
        return action() if self.apply else planned

    def say(self, line: str) -> None:
        self._say(line)

    @property
    def account_id(self) -> str:
        return self._caller_identity()["Account"]

    @property
    def partition(self) -> str:
        return self._caller_identity()["Arn"].split(":")[1]  # aws, aws-cn, aws-us-gov

    def _caller_identity(self) -> dict[str, str]:
        if self._identity is None:
            try:
                self._identity = self.client("sts").get_caller_identity()
            except botocore.exceptions.ClientError as error:
                raise UserError(
                    f"AWS refused the credentials ({error_code(error)}): refresh them or pick another profile"
                ) from None
            except UNREACHABLE as error:
                raise unreachable(error) from None
        return self._identity
