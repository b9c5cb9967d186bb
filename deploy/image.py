"""Build the service's container image from the exported bundle, save it as an OCI layout, describe it.

The build context is assembled from exactly what goes into the image, laid out as in the repository:

    Dockerfile  pyproject.toml  uv.lock  src/tweetbot/__init__.py  src/tweetbot/runtime/  service/
    models/export/ (the bundle)

Only the runtime of the library goes in (tweetbot.runtime: what the service imports), never the pipeline around
it, so an edit to training, the sources or the CLI leaves the tag, and the deployed service, as they are.

and the tag is a hash of that context plus the build settings that change the image (base image, platform),
so the same inputs always give the same tag, and any change to them a new one. The image carries the tag, the
model version and the source revision as OCI labels.

`build/image.json` describes the result for the deploy stage:
    name, tag              the local image is name:tag
    digest                 of the manifest in the OCI layout ("sha256:...")
    size_bytes             the layers uncompressed (what the image takes on disk)
    compressed_bytes       the layers as stored and pulled (gzip)
    layers                 [{digest, size, created_by}]: the manifest's layer blobs, base first
    builder, base_image, model_version, platform
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from deploy import builders, oci
from tweetbot.params import ImageParams
from tweetbot.runtime.errors import UserError
from tweetbot.runtime.paths import BUNDLE

# What the Dockerfile copies, relative to the repository root; .dockerignore lets exactly these through.
CODE_PATHS = (
    "Dockerfile",
    "pyproject.toml",
    "uv.lock",
    "src/tweetbot/__init__.py",
    "src/tweetbot/runtime",
    "service",
)
BUNDLE_PATH = str(BUNDLE)  # where the Dockerfile copies the bundle from, as in the workspace
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
TAG_LENGTH = 12


def build(params: ImageParams, bundle: Path, layout_dir: Path, record_path: Path, repo: Path = Path(".")) -> dict:
    """Build the image, write it as an OCI layout to `layout_dir` and its description to `record_path`."""
    version = model_version(bundle)
    builder = builders.select(params.builder)
    with tempfile.TemporaryDirectory(prefix="tweetbot-image-") as scratch:
        context = Path(scratch) / "context"
        stage_context(repo, bundle, context)
        tag = content_tag(context, base_image=params.base_image, platform=params.platform)
        ref = f"{params.name}:{tag}"
        build_args = {
            "BASE_IMAGE": params.base_image,
            "TAG": tag,
            "MODEL_VERSION": version,
            "REVISION": git_revision(repo),
            "SOURCE": source_url(repo),
        }
        ca_bundle = host_ca_bundle()
        started = time.monotonic()
        builder.build(
            context,
            ref,
            platform=params.platform,
            build_args=build_args,
            secrets={"ca": ca_bundle} if ca_bundle else {},
        )
        built = time.monotonic()
        archive = Path(scratch) / "image.tar"
        builder.save(ref, archive)
        layout = oci.write_layout(archive, layout_dir, ref_name=tag, platform=params.platform)
        print(
            f"built {ref} with {builder.name} in {built - started:.0f} s, "
            f"wrote the OCI layout in {time.monotonic() - built:.0f} s"
        )

    record = {
        "name": params.name,
        "tag": tag,
        "digest": layout.manifest_digest,
        "size_bytes": sum(layer.uncompressed_size for layer in layout.layers),
        "compressed_bytes": sum(layer.size for layer in layout.layers),
        "layers": [
            {"digest": layer.digest, "size": layer.size, "created_by": _one_line(layer.created_by)}
            for layer in layout.layers
        ],
        "builder": builder.name,
        "base_image": params.base_image,
        "model_version": version,
        "platform": params.platform,
    }
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def stage_context(repo: Path, bundle: Path, context: Path) -> None:
    """Copy what goes into the image from `repo`, and the bundle as models/export, into `context`."""
    if not (bundle / "manifest.json").is_file():
        raise UserError(f"{bundle} is not an exported bundle (no manifest.json): run `dvc repro export` first")
    for relative in CODE_PATHS:
        source = repo / relative
        if source.is_dir():
            shutil.copytree(source, context / relative, ignore=SKIPPED)
        elif source.is_file():
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / relative)
        else:
            raise UserError(f"{source} is missing: run the image stage from the repository root")
    shutil.copytree(bundle, context / BUNDLE_PATH, ignore=SKIPPED)


def content_tag(context: Path, *, base_image: str, platform: str) -> str:
    """A short hash of every file in `context` (path and bytes) and of the settings that change the image."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        with path.open("rb") as file:
            content = hashlib.file_digest(file, "sha256").hexdigest()
        digest.update(f"{path.relative_to(context).as_posix()}\0{content}\n".encode())
    digest.update(f"base_image\0{base_image}\nplatform\0{platform}\n".encode())
    return digest.hexdigest()[:TAG_LENGTH]


def model_version(bundle: Path) -> str:
    """The bundle's version, from its manifest (read as JSON: loading the model is not needed here)."""
    try:
        return json.loads((bundle / "manifest.json").read_text())["version"]
    except FileNotFoundError:
        raise UserError(f"{bundle} is not an exported bundle (no manifest.json): run `dvc repro export`") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{bundle}/manifest.json has no version: export the bundle again") from None


def git_revision(repo: Path) -> str:
    """The commit checked out in `repo` ("unknown" outside git), -dirty if the image's code has changes."""
    head = _git(repo, "rev-parse", "HEAD")
    if head is None:
        return "unknown"
    changed = _git(repo, "status", "--porcelain", "--", *CODE_PATHS)
    return f"{head}-dirty" if changed else head


def source_url(repo: Path) -> str:
    """The origin remote's URL without any user or token in it ("" if there is none)."""
    url = _git(repo, "config", "--get", "remote.origin.url") or ""
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return re.sub(r"^[^@/]+@", "", url)  # scp-like git@host:owner/repo


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine trusts, for build steps that download packages (as a build secret)."""
    candidates = [os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile]
    candidates.append("/etc/ssl/certs/ca-certificates.crt")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _one_line(step: str) -> str:
    return " ".join(step.removesuffix(" # buildkit").split())
