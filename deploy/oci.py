"""Turn a docker-archive tar (what `docker save` writes) into the OCI image layout the deploy stage pushes.

    build/image/
      oci-layout                   {"imageLayoutVersion": "1.0.0"}
      index.json                   one single-platform manifest, its tag as org.opencontainers.image.ref.name
      blobs/sha256/<hex>           the gzip-compressed layers, the image config and the manifest

The config is kept byte for byte, so the image ID (the config digest) is the one the builder reported. Layers
are compressed here with a fixed gzip header (no name, no time), so the same layer always gives the same blob.
Spec: https://github.com/opencontainers/image-spec/blob/main/image-layout.md
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CHUNK = 1 << 20
# gzip level 1: a third of level 6's time on these layers (mostly jaxlib's machine code) for 13 % more bytes.
GZIP_LEVEL = 1


@dataclass(frozen=True)
class Layer:
    digest: str  # of the compressed blob, as in the manifest
    size: int  # of the compressed blob
    uncompressed_size: int
    created_by: str  # the Dockerfile step that made it


@dataclass(frozen=True)
class Layout:
    manifest_digest: str
    config: dict
    layers: list[Layer]


def write_layout(archive: Path, out: Path, *, ref_name: str, platform: str) -> Layout:
    """Write the one image in the docker-archive `archive` as an OCI image layout in the folder `out`."""
    if out.exists():
        shutil.rmtree(out)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        config_bytes = tar.extractfile(entry["Config"]).read()
        config = json.loads(config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(entry["Layers"]):
            raise ValueError(f"{archive}: {len(entry['Layers'])} layers but {len(diff_ids)} diff_ids in the config")
        steps = [_describe(step) for step in config.get("history", []) if not step.get("empty_layer")]
        layers = []
        for index, (member, diff_id) in enumerate(zip(entry["Layers"], diff_ids, strict=True)):
            digest, size, uncompressed, content_digest = _compress_into(blobs, tar.extractfile(member))
            if content_digest != diff_id:
                raise ValueError(f"{archive}: layer {member} is {content_digest}, the config says {diff_id}")
            created_by = steps[index] if index < len(steps) else ""
            layers.append(Layer(digest, size, uncompressed, created_by))

    os_name, architecture, *variant = platform.split("/")
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": _write_blob(blobs, config_bytes, CONFIG_TYPE),
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size} for layer in layers],
    }
    manifest_descriptor = _write_blob(blobs, _canonical(manifest), MANIFEST_TYPE)
    manifest_descriptor["platform"] = {"architecture": architecture, "os": os_name}
    if variant:
        manifest_descriptor["platform"]["variant"] = variant[0]
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [manifest_descriptor]}
    (out / "index.json").write_bytes(_canonical(index))
    (out / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
    return Layout(manifest_descriptor["digest"], config, layers)


def _compress_into(blobs: Path, stream) -> tuple[str, int, int, str]:
    """Gzip `stream` into a blob; return (blob digest, blob size, uncompressed size, uncompressed digest)."""
    partial = blobs / "partial.gz"
    content = hashlib.sha256()
    uncompressed = 0
    with (
        partial.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as gz,
    ):
        while chunk := stream.read(CHUNK):
            content.update(chunk)
            uncompressed += len(chunk)
            gz.write(chunk)
    digest = _file_digest(partial)
    size = partial.stat().st_size
    partial.rename(blobs / digest.removeprefix("sha256:"))
    return digest, size, uncompressed, f"sha256:{content.hexdigest()}"


def _describe(step: dict) -> str:
    # An imported base layer has no Dockerfile step, only a comment such as "Imported from -".
    return step.get("created_by") or step.get("comment", "")


def _write_blob(blobs: Path, data: bytes, media_type: str) -> dict:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    (blobs / digest.removeprefix("sha256:")).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _file_digest(path: Path) -> str:
    with path.open("rb") as file:
        return f"sha256:{hashlib.file_digest(file, 'sha256').hexdigest()}"


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
