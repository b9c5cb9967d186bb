"""Container builders: find one that works (docker, podman or buildah) and drive it through its CLI.

Every builder does the same two things: build the Dockerfile in a context folder into a named local image,
and save that image as a docker-archive tar (`deploy.oci` makes it the OCI layout the deploy stage pushes).
The CLIs agree on the flags used here (`--secret`, `--platform`, `--build-arg`, `--network`, `--tag`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tweetbot.runtime.errors import UserError

NAMES = ("docker", "podman", "buildah")
INSTALL_HINT = (
    "install Docker (https://docs.docker.com/engine/install/) and start its daemon, "
    "or podman or buildah (`apt-get install podman` / `buildah`)"
)
PROBE_TIMEOUT_S = 20


class BuilderUnavailable(Exception):
    """This builder cannot build here; the message says why, in a few words."""


@dataclass(frozen=True)
class Builder:
    name: str
    command: tuple[str, ...]  # the CLI and its fixed leading arguments, e.g. ("/usr/bin/docker",)
    env: dict[str, str] = field(default_factory=dict)  # added to the environment of every call

    def build(
        self,
        context: Path,
        ref: str,
        *,
        platform: str,
        build_args: dict[str, str],
        secrets: dict[str, Path],
    ) -> None:
        """Build `context`/Dockerfile into the local image `ref`; the builder's output streams to ours."""
        args = [*self._build_verb(), "--tag", ref, "--platform", platform]
        # Build steps reach the package index through the host's network: that works whether or not the
        # engine has a bridge network (the tests' private dockerd has none) and behind a host-only proxy.
        args += ["--network", "host"]
        args += [f"--build-arg={key}={value}" for key, value in sorted(build_args.items())]
        args += [f"--secret=id={key},src={path}" for key, path in sorted(secrets.items())]
        self._run([*args, str(context)])

    def save(self, ref: str, archive: Path) -> None:
        """Write the local image `ref` as a docker-archive tar."""
        if self.name == "docker":
            self._run(["save", "--output", str(archive), ref])
        else:  # podman and buildah can push to a file
            self._run(["push", ref, f"docker-archive:{archive}:{ref}"])

    def _build_verb(self) -> list[str]:
        if self.name == "docker":
            return ["build"] if self.env.get("DOCKER_BUILDKIT") == "1" else ["buildx", "build", "--load"]
        # podman and buildah write OCI configs by default, which drop HEALTHCHECK; buildah alone would also
        # squash each stage into one layer, and so lose the layer cache.
        return ["build", "--format", "docker"] if self.name == "podman" else ["bud", "--layers", "--format", "docker"]

    def _run(self, args: list[str]) -> None:
        try:
            subprocess.run([*self.command, *args], env=self._environ(), check=True)
        except subprocess.CalledProcessError as error:
            raise UserError(f"`{self.name} {args[0]}` failed (exit {error.returncode}): see its output above") from None

    def _environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def select(preference: str) -> Builder:
    """The builder `preference` names, or for "auto" the first of docker, podman, buildah that works here."""
    names = NAMES if preference == "auto" else (preference,)
    reasons = []
    for name in names:
        try:
            return probe(name)
        except BuilderUnavailable as why:
            reasons.append(f"{name}: {why}")
    if preference == "auto":
        raise UserError(f"no container builder works here ({'; '.join(reasons)}): {INSTALL_HINT}")
    raise UserError(f"image.builder is {preference}, but {reasons[0]}: fix it or set image.builder: auto")


def probe(name: str) -> Builder:
    """A `Builder` for `name` if it can build here, else `BuilderUnavailable` saying why."""
    if name == "docker":
        return _probe_docker()
    executable = shutil.which(name)
    if executable is None:
        raise BuilderUnavailable("not installed")
    _answers([executable, "info"], "`info` failed")
    return Builder(name, (executable,))


def _probe_docker() -> Builder:
    """The first docker CLI on PATH that can use BuildKit, talking to a daemon that answers.

    BuildKit (needed for build secrets) comes with the CLI up to Docker 22 (`DOCKER_BUILDKIT=1`) and as the
    buildx plugin after it; a newer CLI without the plugin can stand on PATH before an older one that can.
    """
    executables = _all_on_path("docker")
    if not executables:
        raise BuilderUnavailable("not installed")
    why = "no docker CLI on PATH has BuildKit (install the buildx plugin: docker-buildx)"
    for executable in executables:
        try:
            _answers([executable, "info", "--format", "{{.ServerVersion}}"], "its daemon does not answer")
        except BuilderUnavailable as error:
            why = str(error)
            continue
        if _answers_quietly([executable, "buildx", "version"]):
            return Builder("docker", (executable,))
        if _client_major(executable) < 23:
            return Builder("docker", (executable,), {"DOCKER_BUILDKIT": "1"})
    raise BuilderUnavailable(why)


def _all_on_path(name: str) -> list[str]:
    found = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.realpath(os.path.join(folder, name))
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) and candidate not in found:
            found.append(candidate)
    return found


def _answers(command: list[str], failure: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise BuilderUnavailable(f"{failure} within {PROBE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise BuilderUnavailable(failure)
    return done.stdout.strip()


def _answers_quietly(command: list[str]) -> bool:
    try:
        _answers(command, "")
    except BuilderUnavailable:
        return False
    return True


def _client_major(executable: str) -> int:
    version = _answers([executable, "version", "--format", "{{.Client.Version}}"], "no client version")
    return int(version.split(".")[0])
