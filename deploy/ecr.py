"""Push an OCI image layout to ECR through the ECR API: no docker, no registry login.

The image stage writes the image as an OCI layout (`oci-layout`, `index.json`, `blobs/sha256/...`). A push
uploads only the blobs (config and layers) that `batch_check_layer_availability` reports missing, then puts
the manifest under the image's tag. The task definition names the image by digest, so what runs is exactly
what was built, whatever happens to tags.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import botocore.exceptions

from deploy.aws import Aws, error_code
from tweetbot.runtime.errors import UserError

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path


@dataclass(frozen=True)
class OciImage:
    manifest: bytes  # pushed byte for byte: the digest is the sha256 of exactly these bytes
    media_type: str
    digest: str
    blobs: tuple[Blob, ...]  # the config, then the layers


def read_layout(layout: Path) -> OciImage:
    """The single-platform image in an OCI layout, every blob checked against its digest."""
    index_file = layout / "index.json"
    if not index_file.exists():
        raise UserError(
            f"{layout} is not an OCI image layout (no index.json): run `dvc repro deploy/dvc.yaml:image` first"
        )
    manifests = json.loads(index_file.read_text()).get("manifests", [])
    if len(manifests) != 1 or manifests[0].get("mediaType") not in MANIFEST_TYPES:
        raise UserError(f"{index_file} must name exactly one single-platform image manifest: rebuild the image")
    descriptor = manifests[0]
    manifest = _read_blob(layout, descriptor["digest"])
    content = json.loads(manifest)
    blobs = tuple(
        Blob(item["digest"], item["size"], _blob_path(layout, item["digest"]))
        for item in [content["config"], *content["layers"]]
    )
    for blob in blobs:
        _read_blob(layout, blob.digest)  # present and intact before anything is uploaded
    return OciImage(manifest, descriptor["mediaType"], descriptor["digest"], blobs)


def _blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    return layout / "blobs" / algorithm / hex_digest


def _read_blob(layout: Path, digest: str) -> bytes:
    path = _blob_path(layout, digest)
    if not path.exists():
        raise UserError(f"{path} is missing from the image layout: run `dvc repro -f image`")
    data = path.read_bytes()
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise UserError(f"{path} does not match its digest: the layout is damaged, run `dvc repro -f image`")
    return data


def ensure_repository(aws: Aws, name: str, tags: dict[str, str]) -> tuple[str, bool]:
    """The repository's URI, and whether it existed already. Scan on push, immutable tags."""
    ecr = aws.client("ecr")
    try:
        repository = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "RepositoryNotFoundException":
            raise
        created = aws.change(
            f"create ECR repository {name} (scan on push, immutable tags)",
            lambda: ecr.create_repository(
                repositoryName=name,
                imageScanningConfiguration={"scanOnPush": True},
                imageTagMutability="IMMUTABLE",
                tags=[{"Key": key, "Value": value} for key, value in tags.items()],
            )["repository"],
        )
        uri = created["repositoryUri"] if created else f"{aws.account_id}.dkr.ecr.{aws.region}.amazonaws.com/{name}"
        return uri, False
    if not repository.get("imageScanningConfiguration", {}).get("scanOnPush"):
        aws.change(
            f"turn on scan on push for ECR repository {name}",
            lambda: ecr.put_image_scanning_configuration(
                repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
            ),
        )
    if repository.get("imageTagMutability") != "IMMUTABLE":
        aws.change(
            f"make the tags of ECR repository {name} immutable",
            lambda: ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="IMMUTABLE"),
        )
    return repository["repositoryUri"], True


def push(aws: Aws, repository: str, image: OciImage, tag: str, repository_existed: bool = True) -> None:
    """Put the image in the repository under `tag`, uploading only the blobs it does not have yet."""
    ecr = aws.client("ecr")
    if repository_existed:
        found = ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageDigest": image.digest}])
        if found["images"]:
            return
        available = ecr.batch_check_layer_availability(
            repositoryName=repository, layerDigests=[blob.digest for blob in image.blobs]
        )["layers"]
        present = {layer["layerDigest"] for layer in available if layer.get("layerAvailability") == "AVAILABLE"}
    else:
        present = set()
    missing = [blob for blob in image.blobs if blob.digest not in present]
    for blob in missing:
        kind = "config" if blob == image.blobs[0] else "layer"
        aws.change(
            f"upload {kind} {blob.digest[:19]} ({blob.size / 1e6:.1f} MB) to ECR {repository}",
            lambda blob=blob: _upload(ecr, repository, blob),
        )
    aws.change(
        f"put image {repository}:{tag} ({image.digest[:19]})",
        lambda: _put_image(ecr, repository, image, tag),
    )


def _upload(ecr, repository: str, blob: Blob) -> None:
    upload = ecr.initiate_layer_upload(repositoryName=repository)
    part_size = upload["partSize"]
    with blob.path.open("rb") as file:
        first = 0
        while part := file.read(part_size):
            ecr.upload_layer_part(
                repositoryName=repository,
                uploadId=upload["uploadId"],
                partFirstByte=first,
                partLastByte=first + len(part) - 1,
                layerPartBlob=part,
            )
            first += len(part)
    try:
        ecr.complete_layer_upload(repositoryName=repository, uploadId=upload["uploadId"], layerDigests=[blob.digest])
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "LayerAlreadyExistsException":  # another push uploaded it meanwhile
            raise


def _put_image(ecr, repository: str, image: OciImage, tag: str) -> None:
    manifest = {
        "repositoryName": repository,
        "imageManifest": image.manifest.decode(),
        "imageManifestMediaType": image.media_type,
        "imageDigest": image.digest,
    }
    try:
        ecr.put_image(**manifest, imageTag=tag)
    except botocore.exceptions.ClientError as error:
        if error_code(error) not in ("ImageTagAlreadyExistsException", "ImageAlreadyExistsException"):
            raise
        if ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageDigest": image.digest}])["images"]:
            return  # another push put this very image meanwhile
        # Tags are immutable and this one names another build of the same inputs (builds need not be
        # byte-identical). The task definition names the image by digest, so push it untagged.
        ecr.put_image(**manifest)
