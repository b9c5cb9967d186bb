"""The image stage without a container engine: context and tag, builder selection, OCI layout, user errors.

Builder selection runs against stand-in CLIs on a PATH of their own: small shell scripts that answer `info`,
`version` and `buildx version` as a working or broken engine does. Real builds: tests/test_image_build.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deploy import builders, image, oci
from tests.conftest import REPO
from tweetbot.runtime.errors import UserError


def make_repo(root: Path) -> Path:
    """A repository with everything the image takes, and some things it must leave out."""
    files = {
        "Dockerfile": "FROM scratch\n",
        "pyproject.toml": "[project]\nname = 'x'\n",
        "uv.lock": "version = 1\n",
        "src/tweetbot/__init__.py": "",
        "src/tweetbot/runtime/model.py": "WIDTH = 1\n",
        "service/app.py": "def create_app(): ...\n",
        "service/static/index.html": "<p>hi</p>\n",
        "tests/test_x.py": "",  # not part of the image
        "service/.env": "TOKEN=do-not-ship\n",  # hidden files stay out
        "service/__pycache__/app.cpython-311.pyc": "compiled",
        "models/export/manifest.json": json.dumps({"version": "v1"}),
        "models/export/weights.msgpack": "weights",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def context_of(repo: Path, where: Path) -> Path:
    image.stage_context(repo, repo / "models/export", where)
    return where


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def test_context_holds_exactly_what_the_image_copies(tmp_path):
    context = context_of(make_repo(tmp_path / "repo"), tmp_path / "context")
    assert files_under(context) == {
        "Dockerfile",
        "pyproject.toml",
        "uv.lock",
        "src/tweetbot/__init__.py",
        "src/tweetbot/runtime/model.py",
        "service/app.py",
        "service/static/index.html",
        "models/export/manifest.json",
        "models/export/weights.msgpack",
    }


def test_same_inputs_give_the_same_tag_and_any_change_a_new_one(tmp_path):
    repo = make_repo(tmp_path / "repo")
    settings = {"base_image": "python:3.11-slim", "platform": "linux/amd64"}
    tag = image.content_tag(context_of(repo, tmp_path / "a"), **settings)
    assert tag == image.content_tag(context_of(repo, tmp_path / "b"), **settings)
    assert len(tag) == image.TAG_LENGTH and int(tag, 16) >= 0

    (repo / "service/__pycache__/other.pyc").write_text("bytecode is no input")
    assert image.content_tag(context_of(repo, tmp_path / "c"), **settings) == tag

    other_base = {**settings, "base_image": "localhost/tweetbot-base:bookworm"}
    assert image.content_tag(context_of(repo, tmp_path / "d"), **other_base) != tag
    tags = {tag}
    for n, (name, text) in enumerate(
        [
            ("models/export/weights.msgpack", "retrained"),  # the bundle
            ("service/app.py", "def create_app(): return 1\n"),  # the code
            ("uv.lock", "version = 2\n"),  # the lock file
            ("Dockerfile", "FROM scratch\nUSER 1\n"),  # the Dockerfile
        ]
    ):
        (repo / name).write_text(text)
        tags.add(image.content_tag(context_of(repo, tmp_path / f"changed{n}"), **settings))
    assert len(tags) == 5


def test_a_renamed_file_changes_the_tag(tmp_path):
    repo = make_repo(tmp_path / "repo")
    before = image.content_tag(context_of(repo, tmp_path / "a"), base_image="b", platform="linux/amd64")
    (repo / "service/app.py").rename(repo / "service/main.py")
    after = image.content_tag(context_of(repo, tmp_path / "b"), base_image="b", platform="linux/amd64")
    assert before != after


def test_dockerignore_lets_through_exactly_what_the_stage_copies():
    allowed = [
        line.removeprefix("!") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    assert sorted(allowed) == sorted([*image.CODE_PATHS, image.BUNDLE_PATH])


def test_missing_bundle_or_version_is_a_user_error(tmp_path):
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(UserError, match="dvc repro export"):
        image.stage_context(repo, tmp_path / "nowhere", tmp_path / "context")
    (repo / "models/export/manifest.json").write_text("{}")
    with pytest.raises(UserError, match="no version"):
        image.model_version(repo / "models/export")


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("https://user:ghp_secret@github.com/acme/tweetbot.git", "https://github.com/acme/tweetbot.git"),
        ("https://github.com/acme/tweetbot.git", "https://github.com/acme/tweetbot.git"),
        ("git@github.com:acme/tweetbot.git", "github.com:acme/tweetbot.git"),
    ],
)
def test_source_label_never_carries_credentials(tmp_path, remote, expected):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", remote], check=True)
    assert image.source_url(tmp_path) == expected


# --- builder selection, against stand-in CLIs ---


def fake_cli(folder: Path, name: str, *, daemon: bool = True, version: str = "28.2.2", buildx: bool = False) -> Path:
    """A stand-in CLI: `info` works if `daemon`, `version` prints `version`, `buildx version` if `buildx`."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in\n'
        f"  info) exit {0 if daemon else 1} ;;\n"
        f"  version) echo {version} ;;\n"
        f"  buildx) exit {0 if buildx else 1} ;;\n"
        "  *) exit 3 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    return script


@pytest.fixture
def path_of(monkeypatch):
    """Make PATH exactly the given folders (no real engine of this machine can answer)."""

    def set_path(*folders: Path) -> None:
        monkeypatch.setenv("PATH", os.pathsep.join(str(folder) for folder in folders))

    return set_path


def test_auto_takes_the_first_builder_that_works(tmp_path, path_of):
    fake_cli(tmp_path / "bin", "docker", daemon=False)
    fake_cli(tmp_path / "bin", "podman")
    fake_cli(tmp_path / "bin", "buildah")
    path_of(tmp_path / "bin")
    chosen = builders.select("auto")
    assert (chosen.name, chosen.command) == ("podman", (str(tmp_path / "bin" / "podman"),))


def test_docker_without_buildkit_is_passed_over_for_an_older_cli_that_has_it(tmp_path, path_of):
    fake_cli(tmp_path / "new", "docker", version="28.2.2")  # no buildx plugin
    fake_cli(tmp_path / "old", "docker", version="20.10.24+dfsg1")
    path_of(tmp_path / "new", tmp_path / "old")
    chosen = builders.select("docker")
    assert chosen.command == (str(tmp_path / "old" / "docker"),)
    assert chosen.env == {"DOCKER_BUILDKIT": "1"}


def test_docker_with_buildx_builds_through_it(tmp_path, path_of):
    fake_cli(tmp_path / "bin", "docker", version="28.2.2", buildx=True)
    path_of(tmp_path / "bin")
    chosen = builders.select("auto")
    assert (chosen.name, chosen.env) == ("docker", {})


def test_no_builder_is_one_line_naming_what_to_install(tmp_path, path_of):
    fake_cli(tmp_path / "bin", "docker", daemon=False)
    path_of(tmp_path / "bin")
    with pytest.raises(UserError) as error:
        builders.select("auto")
    message = str(error.value)
    assert "\n" not in message
    assert "docker: its daemon does not answer" in message and "podman: not installed" in message
    assert "install Docker" in message


def test_a_named_builder_that_does_not_work_says_why(tmp_path, path_of):
    path_of(tmp_path / "empty")
    with pytest.raises(UserError, match="image.builder is buildah, but buildah: not installed"):
        builders.select("buildah")


@pytest.mark.parametrize(
    ("name", "verb"),
    [
        ("docker", ["build"]),  # a Docker 20.10-22 CLI, BuildKit built in
        ("podman", ["build", "--format", "docker"]),  # the OCI format would drop HEALTHCHECK
        ("buildah", ["bud", "--layers", "--format", "docker"]),
    ],
)
def test_build_passes_the_ca_bundle_as_a_secret_only(tmp_path, name, verb):
    log = tmp_path / "args"
    cli = tmp_path / name
    cli.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {log}\n')
    cli.chmod(0o755)
    builder = builders.Builder(name, (str(cli),), {"DOCKER_BUILDKIT": "1"} if name == "docker" else {})
    ca = tmp_path / "ca.pem"
    builder.build(
        tmp_path / "context",
        "tweetbot:abc",
        platform="linux/amd64",
        build_args={"TAG": "abc"},
        secrets={"ca": ca},
    )
    args = log.read_text().splitlines()
    assert args[: len(verb)] == verb and args[-1] == str(tmp_path / "context")
    assert f"--secret=id=ca,src={ca}" in args and "--build-arg=TAG=abc" in args
    assert sum(str(ca) in arg for arg in args) == 1  # never a build argument, which would land in the image


def test_stage_without_builder_exits_2_with_one_line(tmp_path):
    bundle = make_repo(tmp_path / "repo") / "models/export"
    (tmp_path / "params.yaml").write_text("image:\n  builder: auto\n")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "stages/image.py"),
            str(bundle),
            str(tmp_path / "image"),
            str(tmp_path / "image.json"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PATH": str(tmp_path / "empty")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "no container builder works here" in done.stderr
    assert not (tmp_path / "image.json").exists()


# --- OCI layout from a docker-archive ---


def layer_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def docker_archive(path: Path, layers: list[bytes], *, history: list[dict], diff_ids=None) -> bytes:
    """Write a docker-archive as `docker save` does; return its config bytes."""
    diff_ids = diff_ids or [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"User": "tweetbot"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }
    ).encode()
    members = {f"layer{n}/layer.tar": layer for n, layer in enumerate(layers)}
    members["config.json"] = config
    members["manifest.json"] = json.dumps(
        [
            {
                "Config": "config.json",
                "RepoTags": ["tweetbot:t"],
                "Layers": [f"layer{n}/layer.tar" for n in range(len(layers))],
            }
        ]
    ).encode()
    path.write_bytes(layer_tar(members))
    return config


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
    return data


def test_oci_layout_holds_the_image_compressed_and_verifiable(tmp_path):
    layers = [layer_tar({"etc/os-release": b"debian"}), layer_tar({"app/bundle/manifest.json": b"{}"})]
    history = [
        {"created_by": "", "comment": "Imported from -"},
        {"created_by": "ENV PORT=8080", "empty_layer": True},
        {"created_by": "COPY models/export /app/bundle # buildkit"},
    ]
    config = docker_archive(tmp_path / "image.tar", layers, history=history)

    layout = oci.write_layout(tmp_path / "image.tar", tmp_path / "layout", ref_name="abc123", platform="linux/amd64")

    out = tmp_path / "layout"
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads((out / "index.json").read_text())["manifests"]
    assert entry["digest"] == layout.manifest_digest and entry["mediaType"] == oci.MANIFEST_TYPE
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "abc123"
    manifest = json.loads(blob(out, entry["digest"]))
    assert blob(out, manifest["config"]["digest"]) == config  # byte for byte: the image ID is kept
    assert [gzip.decompress(blob(out, d["digest"])) for d in manifest["layers"]] == layers
    assert [(layer.digest, layer.size) for layer in layout.layers] == [
        (d["digest"], d["size"]) for d in manifest["layers"]
    ]
    assert [layer.created_by for layer in layout.layers] == ["Imported from -", history[2]["created_by"]]
    assert [layer.uncompressed_size for layer in layout.layers] == [len(layer) for layer in layers]
    assert set(os.listdir(out / "blobs/sha256")) == {
        d["digest"].removeprefix("sha256:") for d in [entry, manifest["config"], *manifest["layers"]]
    }


def test_the_same_image_gives_the_same_layout(tmp_path):
    docker_archive(tmp_path / "image.tar", [layer_tar({"a": b"1"})], history=[{"created_by": "COPY a /"}])
    first = oci.write_layout(tmp_path / "image.tar", tmp_path / "one", ref_name="t", platform="linux/amd64")
    second = oci.write_layout(tmp_path / "image.tar", tmp_path / "two", ref_name="t", platform="linux/amd64")
    assert first.manifest_digest == second.manifest_digest


def test_a_layer_that_does_not_match_its_config_is_refused(tmp_path):
    docker_archive(tmp_path / "image.tar", [layer_tar({"a": b"1"})], history=[], diff_ids=[f"sha256:{'0' * 64}"])
    with pytest.raises(ValueError, match="the config says"):
        oci.write_layout(tmp_path / "image.tar", tmp_path / "layout", ref_name="t", platform="linux/amd64")
