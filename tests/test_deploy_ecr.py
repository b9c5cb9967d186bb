"""Pushing an OCI layout to ECR through the API, against a moto server: only missing blobs go up."""

from __future__ import annotations

import itertools
import json

import pytest

from deploy import ecr
from deploy.aws import Aws
from tests.aws import counting_session, layer, moto_server, write_image
from tweetbot.runtime.errors import UserError

BASE = layer({"usr/lib/python3/base.py": b"# the base image\n" * 2000})
APP = layer({"app/service.py": b"print('hello')\n"})
BUNDLE_V1 = layer({"app/bundle/weights.bin": bytes(range(256)) * 64})
BUNDLE_V2 = layer({"app/bundle/weights.bin": bytes(reversed(range(256))) * 64})


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        yield url


NAMES = (f"tweetbot-{number}" for number in itertools.count())


@pytest.fixture
def repository(moto_url) -> str:
    """A repository name no other test uses: one server serves the module, with no reset between tests."""
    return next(NAMES)


def push(tmp_path, layers, tag, session, repository):
    write_image(tmp_path, layers, tag=tag)
    image = ecr.read_layout(tmp_path / "image")
    aws = Aws(session=session, say=lambda line: None)
    uri, existed = ecr.ensure_repository(aws, repository, {"project": "test"})
    ecr.push(aws, repository, image, tag, existed)
    return image, uri


def operations(calls, name):
    return [params for _, operation, params in calls if operation == name]


def test_read_layout_gives_the_manifest_and_its_blobs_config_first(tmp_path):
    record = write_image(tmp_path, [BASE, APP])
    image = ecr.read_layout(tmp_path / "image")
    manifest = json.loads(image.manifest)
    assert image.digest == record["digest"]
    assert image.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert [blob.digest for blob in image.blobs] == [manifest["config"]["digest"]] + [
        item["digest"] for item in record["layers"]
    ]


def test_a_damaged_or_incomplete_layout_is_a_one_line_error_before_any_upload(tmp_path):
    record = write_image(tmp_path, [BASE, APP])
    layer_path = tmp_path / "image" / "blobs" / "sha256" / record["layers"][1]["digest"].removeprefix("sha256:")
    layer_path.write_bytes(layer_path.read_bytes()[:-1])
    with pytest.raises(UserError, match="does not match its digest"):
        ecr.read_layout(tmp_path / "image")
    layer_path.unlink()
    with pytest.raises(UserError, match="is missing from the image layout"):
        ecr.read_layout(tmp_path / "image")
    with pytest.raises(UserError, match="not an OCI image layout"):
        ecr.read_layout(tmp_path / "nowhere")


def test_first_push_creates_the_repository_and_uploads_every_blob(tmp_path, repository):
    session, calls = counting_session()
    image, uri = push(tmp_path, [BASE, APP, BUNDLE_V1], "v1", session, repository)
    (created,) = operations(calls, "CreateRepository")
    assert created["imageScanningConfiguration"] == {"scanOnPush": True}
    assert created["imageTagMutability"] == "IMMUTABLE"
    completed = [params["layerDigests"][0] for params in operations(calls, "CompleteLayerUpload")]
    assert completed == [blob.digest for blob in image.blobs]

    ecr_client = session.client("ecr")
    (described,) = ecr_client.describe_repositories(repositoryNames=[repository])["repositories"]
    assert described["repositoryUri"] == uri
    assert described["imageScanningConfiguration"]["scanOnPush"] is True
    assert described["imageTagMutability"] == "IMMUTABLE"
    (pushed,) = ecr_client.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": "v1"}])["images"]
    assert pushed["imageId"]["imageDigest"] == image.digest
    assert pushed["imageManifest"] == image.manifest.decode()
    available = ecr_client.batch_check_layer_availability(
        repositoryName=repository, layerDigests=[blob.digest for blob in image.blobs]
    )
    assert len(available["layers"]) == len(image.blobs) and not available["failures"]


def test_pushing_the_same_image_again_changes_nothing(tmp_path, repository):
    push(tmp_path, [BASE, APP, BUNDLE_V1], "v1", counting_session()[0], repository)
    session, calls = counting_session()
    push(tmp_path, [BASE, APP, BUNDLE_V1], "v1", session, repository)
    assert [operation for _, operation, _ in calls] == ["DescribeRepositories", "BatchGetImage"]


def test_a_new_model_uploads_only_its_own_layer_and_the_config(tmp_path, repository):
    push(tmp_path / "v1", [BASE, APP, BUNDLE_V1], "v1", counting_session()[0], repository)
    session, calls = counting_session()
    image, _ = push(tmp_path / "v2", [BASE, APP, BUNDLE_V2], "v2", session, repository)
    uploaded = [params["layerDigests"][0] for params in operations(calls, "CompleteLayerUpload")]
    config, *layers = image.blobs
    assert uploaded == [config.digest, layers[2].digest]
    assert [params["imageTag"] for params in operations(calls, "PutImage")] == ["v2"]


def test_a_tag_taken_by_another_build_is_not_moved_the_image_goes_up_untagged(tmp_path, repository):
    push(tmp_path / "first", [BASE, APP, BUNDLE_V1], "same-inputs", counting_session()[0], repository)
    session, calls = counting_session()
    image, _ = push(tmp_path / "second", [BASE, APP, BUNDLE_V2], "same-inputs", session, repository)
    images = session.client("ecr").batch_get_image(repositoryName=repository, imageIds=[{"imageDigest": image.digest}])[
        "images"
    ]
    assert [found["imageId"]["imageDigest"] for found in images] == [image.digest]
    tagged, untagged = operations(calls, "PutImage")  # the tagged put is refused, the untagged one lands
    assert tagged["imageTag"] == "same-inputs" and "imageTag" not in untagged


def test_an_existing_repository_is_adopted_and_given_the_expected_settings(tmp_path, repository):
    session, calls = counting_session()
    session.client("ecr").create_repository(repositoryName=repository, imageTagMutability="MUTABLE")
    calls.clear()
    push(tmp_path, [BASE, APP], "v1", session, repository)
    names = [operation for _, operation, _ in calls]
    assert "CreateRepository" not in names
    assert "PutImageScanningConfiguration" in names and "PutImageTagMutability" in names
    (described,) = session.client("ecr").describe_repositories(repositoryNames=[repository])["repositories"]
    assert described["imageTagMutability"] == "IMMUTABLE"
    assert described["imageScanningConfiguration"]["scanOnPush"] is True
