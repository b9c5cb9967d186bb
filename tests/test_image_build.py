"""The image stage for real: `dvc repro image` on the demo pipeline, then the image is run and looked inside.

Needs a container engine. Where no Docker daemon answers, the tests start one of their own (dockerd, from
deploy/setup_builder.sh) with its own data root, exec root and socket and no bridge network, so containers use
the host's network and are reached on 127.0.0.1; it is stopped by its PID at the end. The base image is the
local one setup_builder.sh made (no registry is needed). They skip, saying why, only where no engine can be
installed. Secrets are planted where a careless build would pick them up, and looked for in every layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from deploy import builders, image
from tests.conftest import REPO
from tests.live_service import free_port, stop
from tests.pipeline import dvc, make_project, run, stages_run

pytestmark = pytest.mark.slow

CACHE = Path(
    os.environ.get("TWEETBOT_IMAGE_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tweetbot-image"
)
BASE_TAR = CACHE / "base-bookworm.tar"
LOCAL_BASE = "localhost/tweetbot-base:bookworm"
CANARY = "tweetbot-canary-7f3d9a1c"  # planted in the build's environment, files and git remote
HOST_CA = image.host_ca_bundle()
RECORD_KEYS = {
    "name",
    "tag",
    "digest",
    "size_bytes",
    "compressed_bytes",
    "layers",
    "builder",
    "base_image",
    "model_version",
    "platform",
}


@dataclass(frozen=True)
class Engine:
    docker: tuple[str, ...]  # the docker CLI to call

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.docker, *args], capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done


@pytest.fixture(scope="module")
def engine():
    """A docker engine that answers, with the local base image in it; a private daemon if need be."""
    _install_builder_or_skip()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.nullcontext() if _docker_answers() else private_dockerd(patch),
    ):
        docker = Engine(builders.probe("docker").command)
        if docker("image", "inspect", LOCAL_BASE, check=False).returncode != 0:
            docker("import", str(BASE_TAR), LOCAL_BASE)
        yield docker


def _docker_answers() -> bool:
    try:
        builders.probe("docker")
    except builders.BuilderUnavailable:
        return False
    return True


def _install_builder_or_skip() -> None:
    if shutil.which("dockerd") and BASE_TAR.is_file():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no container engine here, and only root can install one: run deploy/setup_builder.sh as root")
    done = subprocess.run(["bash", str(REPO / "deploy/setup_builder.sh")], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"deploy/setup_builder.sh could not install a container engine: {last}")


@contextlib.contextmanager
def private_dockerd(patch: pytest.MonkeyPatch):
    """Run dockerd with its own state, point DOCKER_HOST at it, and stop it by its PID afterwards."""
    run_dir = Path(tempfile.mkdtemp(prefix="tbd-", dir="/tmp"))  # short: a socket path has at most 107 bytes
    with _data_root(run_dir) as data_root, (run_dir / "dockerd.log").open("w") as log:
        socket_path = run_dir / "docker.sock"
        command = ["dockerd", "--data-root", str(data_root), "--exec-root", str(run_dir / "exec")]
        command += ["--pidfile", str(run_dir / "dockerd.pid"), "--host", f"unix://{socket_path}"]
        command += ["--bridge", "none", "--iptables=false", "--ip-masq=false"]
        daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            patch.setenv("DOCKER_HOST", f"unix://{socket_path}")
            _wait_for_daemon(daemon, run_dir / "dockerd.log")
            yield
        finally:
            stop(daemon, timeout_s=60)
    _unmount_under(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)


def _unmount_under(folder: Path) -> None:
    """Unmount what dockerd left mounted in `folder` (it keeps a bind of its network namespace there)."""
    mount_points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((p for p in mount_points if p.startswith(f"{folder}/")), reverse=True):
        subprocess.run(["umount", point], check=False)


@contextlib.contextmanager
def _data_root(run_dir: Path):
    """The cached data root (layers and build cache survive between runs), or a fresh one if it is in use."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "docker-data.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run's daemon has it
            yield run_dir / "data"
        else:
            yield CACHE / "docker-data"


def _wait_for_daemon(daemon: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise AssertionError(f"dockerd exited ({daemon.returncode}):\n{log.read_text()[-2000:]}")
        if _docker_answers():
            return
        time.sleep(0.5)
    raise AssertionError(f"dockerd did not answer within 60 s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def built(engine, tmp_path_factory):
    """A throwaway project with secrets planted around it, after `dvc repro image` ran the whole pipeline."""
    root = make_project(tmp_path_factory.mktemp("project"))
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock"):
        shutil.copy2(REPO / name, root / name)
    document = yaml.safe_load((root / "params.yaml").read_text())
    document["image"]["base_image"] = LOCAL_BASE
    (root / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    (root / "service/.env").write_text(f"X_BEARER_TOKEN={CANARY}\n")
    run(root, "git", "add", "-A")
    run(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "image inputs")
    run(root, "git", "remote", "add", "origin", f"https://bot:{CANARY}@example.com/acme/tweetbot.git")

    with pytest.MonkeyPatch.context() as patch:
        for variable in ("X_BEARER_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            patch.setenv(variable, CANARY)
        started = time.monotonic()
        result = dvc(root, "repro", "deploy/dvc.yaml:image")
    print(f"\n`dvc repro image` (fetch to image) took {time.monotonic() - started:.0f} s")
    assert stages_run(result)[-1] == "deploy/dvc.yaml:image", result.stdout
    yield root
    record = json.loads((root / "build/image.json").read_text())
    engine("rmi", f"{record['name']}:{record['tag']}", check=False)  # its layers stay in the build cache


def test_record_describes_the_oci_layout(built):
    record = json.loads((built / "build/image.json").read_text())
    layout = built / "build/image"
    assert set(record) == RECORD_KEYS
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["digest"] == record["digest"] and entry["platform"] == {
        "architecture": "amd64",
        "os": "linux",
    }
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == record["tag"]
    manifest = json.loads(read_blob(layout, entry["digest"]))
    read_blob(layout, manifest["config"]["digest"])
    assert [{"digest": d["digest"], "size": d["size"]} for d in manifest["layers"]] == [
        {"digest": layer["digest"], "size": layer["size"]} for layer in record["layers"]
    ]
    assert record["compressed_bytes"] == sum(len(read_blob(layout, d["digest"])) for d in manifest["layers"])
    assert record["compressed_bytes"] < record["size_bytes"] <= 800_000_000
    bundle_manifest = json.loads((built / "models/export/manifest.json").read_text())
    assert record["model_version"] == bundle_manifest["version"]
    assert (record["builder"], record["base_image"], record["platform"]) == (
        "docker",
        LOCAL_BASE,
        "linux/amd64",
    )
    assert any("COPY models/export" in layer["created_by"] for layer in record["layers"])
    print("\n" + summary(record))


def test_image_config_labels_user_port_healthcheck(built):
    record = json.loads((built / "build/image.json").read_text())
    config = image_config(built / "build/image")["config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == record["tag"]
    assert labels["io.tweetbot.model.version"] == record["model_version"]
    assert labels["org.opencontainers.image.revision"] == run(built, "git", "rev-parse", "HEAD").stdout.strip()
    assert labels["org.opencontainers.image.source"] == "https://example.com/acme/tweetbot.git"
    assert config["User"] not in ("", "root", "0") and not config["User"].startswith(("root:", "0:"))
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] == "CMD" and "curl" not in " ".join(config["Healthcheck"]["Test"])


def test_no_secret_in_any_layer_or_in_the_config(built):
    layout = built / "build/image"
    config_text = json.dumps(image_config(layout))
    assert CANARY not in config_text
    ca_digest = hashlib.sha256(HOST_CA.read_bytes()).hexdigest() if HOST_CA else None
    ca_size = HOST_CA.stat().st_size if HOST_CA else None
    suspicious = {".env", ".netrc", ".pypirc", ".git-credentials", "credentials", "id_rsa", "id_ed25519"}
    found = []
    for layer in image_manifest(layout)["layers"]:
        with (
            gzip.open(blob_path(layout, layer["digest"])) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for member in tar:
                name = member.name.removeprefix("./")
                if Path(name).name in suspicious or name.startswith("run/secrets/"):
                    found.append(f"{name}: a secret's file name")
                if not member.isfile() or member.size > 50_000_000:
                    continue
                data = tar.extractfile(member).read()
                if CANARY.encode() in data:
                    found.append(f"{name}: a planted secret")
                if member.size == ca_size and hashlib.sha256(data).hexdigest() == ca_digest:
                    found.append(f"{name}: the build machine's CA bundle")
    assert found == []


def test_container_serves_as_non_root_and_stops_at_once(engine, built):
    record = json.loads((built / "build/image.json").read_text())
    port = free_port()
    started = time.monotonic()
    container = engine("run", "--detach", "--network", "host", "--env", f"PORT={port}",
                       f"{record['name']}:{record['tag']}").stdout.strip()  # fmt: skip
    try:
        wait_ready(engine, container, port)
        ready_s = time.monotonic() - started
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            body = json.loads(response.read())
        assert isinstance(body["text"], str)

        status = engine("exec", container, "cat", "/proc/1/status").stdout
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert uid != "0"
        health = json.loads(engine("inspect", "--format", "{{json .Config.Healthcheck.Test}}", container).stdout)
        assert engine("exec", container, *health[1:], check=False).returncode == 0

        stopping = time.monotonic()
        engine("stop", "--time", "30", container)
        stop_s = time.monotonic() - stopping
        # 0: uvicorn ended on SIGTERM by itself; a process that ignored it would be killed (137) after 30 s.
        assert engine("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip() == "0"
        print(f"\nstart to ready {ready_s:.1f} s, stop {stop_s:.1f} s, uid {uid}, GET / -> {body}")
    finally:
        engine("rm", "--force", container, check=False)


def test_second_repro_with_nothing_changed_does_not_rebuild(built):
    before = (built / "build/image.json").read_bytes()
    result = dvc(built, "repro", "deploy/dvc.yaml:image")
    assert stages_run(result) == []
    assert (built / "build/image.json").read_bytes() == before


def wait_ready(engine: Engine, container: str, port: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError),  # 503 while warming up, or not up yet
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response,
        ):
            if response.status == 200:
                return
        if engine("inspect", "--format", "{{.State.Running}}", container).stdout.strip() != "true":
            raise AssertionError(f"the container stopped:\n{engine('logs', container).stderr[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"not ready within {timeout_s} s:\n{engine('logs', container).stderr[-3000:]}")


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs/sha256" / digest.removeprefix("sha256:")


def read_blob(layout: Path, digest: str) -> bytes:
    data = blob_path(layout, digest).read_bytes()
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
    return data


def image_manifest(layout: Path) -> dict:
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    return json.loads(read_blob(layout, entry["digest"]))


def image_config(layout: Path) -> dict:
    return json.loads(read_blob(layout, image_manifest(layout)["config"]["digest"]))


def summary(record: dict) -> str:
    largest = sorted(record["layers"], key=lambda layer: layer["size"], reverse=True)[:3]
    lines = [
        f"{record['name']}:{record['tag']} {record['digest']}",
        f"{record['size_bytes'] / 1e6:.0f} MB uncompressed, "
        f"{record['compressed_bytes'] / 1e6:.0f} MB compressed, largest layers:",
    ]
    lines += [f"  {layer['size'] / 1e6:7.1f} MB  {layer['created_by'][:90]}" for layer in largest]
    return "\n".join(lines)
