"""Test helpers for the deploy stage: a moto server on a free loopback port, and synthetic OCI image layouts.

Every AWS call in the deploy tests goes through real boto3 (or DVC's s3fs) over HTTP to the moto server, with
fake credentials set only in the test's environment.

moto's ECS schedules nothing: a service's one deployment is made at creation (reported as running when
MOTO_ECS_SERVICE_RUNNING says so) and an `update_service` starts none. The server here finishes each update's
rollout at once, as ECS does when the new tasks come up healthy: a new PRIMARY deployment of the service's
task definition replaces the old ones. What happens in between (progress, the circuit breaker) is tested on
canned answers (tests/test_deploy_rollout.py).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import boto3
import botocore.loaders
import botocore.session
import pytest
from moto.core.utils import utcnow
from moto.ecs.models import EC2ContainerServiceBackend
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 for a role
    "AWS_CONFIG_FILE": "/nonexistent/aws/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws/credentials",
    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",  # so IAM knows AmazonECSTaskExecutionRolePolicy
    "MOTO_ECS_SERVICE_RUNNING": "1",  # moto starts no tasks: report a new service's tasks as running (as `make moto`)
}
NO_AWS_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 at a free port, with the fake AWS environment set (and undone, variable by
    variable, when it stops); yields its URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with patched_environ(FAKE_AWS_ENV, remove=NO_AWS_ENV) as environment, ecs_that_rolls_out():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        environment.setenv("AWS_ENDPOINT_URL", url)
        try:
            yield url
        finally:
            server.stop()


_moto_update_service = EC2ContainerServiceBackend.update_service


def ecs_that_rolls_out():
    """moto's ECS, each `update_service` followed by the rollout ECS makes of it (see the module's docstring)."""
    return mock.patch.object(EC2ContainerServiceBackend, "update_service", _update_service_and_roll_out)


def _update_service_and_roll_out(backend, service_properties):
    """moto's update_service, then what ECS does once the new tasks are healthy: one PRIMARY deployment of the
    service's (new) task definition, COMPLETED."""
    service = _moto_update_service(backend, service_properties)
    rolled = {**service.deployments[0]} if service.deployments else {}
    now = utcnow()
    rolled.update(
        id=f"ecs-svc/{uuid.uuid4().int % 10**18}",
        status="PRIMARY",
        taskDefinition=service.task_definition,
        desiredCount=service.desired_count,
        runningCount=service.desired_count,
        pendingCount=0,
        rolloutState="COMPLETED",
        rolloutStateReason="ECS deployment completed.",
        createdAt=now,
        updatedAt=now,
    )
    service.deployments = [rolled]
    return service


@contextlib.contextmanager
def patched_environ(values: dict[str, str], remove: tuple[str, ...] = ()) -> Iterator[pytest.MonkeyPatch]:
    """os.environ with `values` set and `remove` unset, each undone on exit, and nothing else touched (restoring
    the whole environment would also undo what was set meanwhile); yields the MonkeyPatch, for more."""
    with pytest.MonkeyPatch.context() as environment:
        for name in remove:
            environment.delenv(name, raising=False)
        for name, value in values.items():
            environment.setenv(name, value)
        yield environment


_LOADER = botocore.loaders.create_loader()


def counting_session() -> tuple[boto3.Session, list[tuple[str, str, dict]]]:
    """A boto3 session that records every call as (service, operation, arguments) in a `before-call` hook."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)  # parse each service's API model once per test run
    session = boto3.Session(botocore_session=core, region_name=REGION)
    calls: list[tuple[str, str, dict]] = []

    def remember(params, context, **_):
        context["api_params"] = dict(params)  # the call's arguments, as the caller passed them

    def record(model, context, **_):  # just before the request goes out
        calls.append((model.service_model.service_name, model.name, context.get("api_params", {})))

    session.events.register("before-parameter-build", remember)
    session.events.register("before-call", record)
    return session, calls


def _blob(layout: Path, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def layer(files: dict[str, bytes]) -> bytes:
    """A gzip-compressed tar layer holding `files`, reproducibly (fixed times, owners and order)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def write_image(build: Path, layers: list[bytes], tag: str = "0123abcd", model_version: str = "m1") -> dict:
    """An OCI layout at build/image and its record build/image.json, as the image stage writes them."""
    layout = build / "image"
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layer_descriptors = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, data)} for data in layers
    ]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"User": "10001", "ExposedPorts": {"8080/tcp": {}}, "Cmd": ["python3", "-m", "service"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() for data in layers],
        },
        "history": [{"created_by": f"layer {index}"} for index in range(len(layers))],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(layout, json.dumps(config).encode()),
        },
        "layers": layer_descriptors,
    }
    manifest_descriptor = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(layout, json.dumps(manifest, indent=2).encode()),
        "platform": {"architecture": "amd64", "os": "linux"},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_descriptor]}))
    record = {
        "name": "tweetbot",
        "tag": tag,
        "digest": manifest_descriptor["digest"],
        "size_bytes": sum(len(gzip.decompress(data)) for data in layers),
        "compressed_bytes": sum(len(data) for data in layers),
        "layers": [
            {"digest": d["digest"], "size": d["size"], "created_by": f"layer {i}"}
            for i, d in enumerate(layer_descriptors)
        ],
        "builder": "test",
        "base_image": "scratch",
        "model_version": model_version,
        "platform": "linux/amd64",
    }
    (build / "image.json").write_text(json.dumps(record, indent=2))
    return record


def main() -> None:
    """`make moto`: this fake AWS on 127.0.0.1, until Ctrl-C."""
    import argparse
    import threading

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=5000)
    port = parser.parse_args().port
    with ecs_that_rolls_out():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        print(f"a fake AWS on http://127.0.0.1:{port}: Ctrl-C stops it", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            server.stop()


if __name__ == "__main__":
    main()
