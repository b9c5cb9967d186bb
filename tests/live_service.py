"""The service as it runs in production (uvicorn, a real socket on 127.0.0.1), for the tests that need it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

READY_TIMEOUT_S = 600  # a cold JAX compilation cache on a busy machine; warm, it takes seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM, and SIGKILL if `process` has not exited within `timeout_s`."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def live_service(bundle: Path, log: Path, **env: str) -> Iterator[str]:
    """`uvicorn --factory service.app:create_app` serving `bundle`; yields its base URL once it is ready.

    The service's log goes to the file `log` (a pipe nobody reads would fill up and stall the server).
    """
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    environment = {**os.environ, "TWEETBOT_BUNDLE": str(bundle), "TWEETBOT_LOG_LEVEL": "WARNING", **env}
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not is_ready(url):
            if server.poll() is not None:
                raise RuntimeError(f"the service exited with {server.returncode}: {Path(log).read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service was not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.2)
        yield url
    finally:
        stop(server, timeout_s=10)
