"""SIGTERM against the real server process, started as the image starts it (the Dockerfile's CMD and ENV).

16 `GET /` requests and 2 streams are in flight when the signal comes; each must complete, or end cleanly
(a 503 with Retry-After, a stream's `done` event), and the process must exit within TWEETBOT_DRAIN_S.
The model is a random one, large enough that the work takes seconds (one slot: the requests queue), longer
than uvicorn's 3 s the image used to wait: how many complete depends on the machine's speed, that all end
cleanly does not.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from service.settings import Settings
from tests.conftest import REPO
from tests.live_service import READY_TIMEOUT_S, free_port, is_ready, stop
from tests.tiny_bundle import VOCAB
from tweetbot.runtime import bundle
from tweetbot.runtime.model import CharRNN
from tweetbot.runtime.vocab import EOS

GETS, STREAMS = 16, 2


def image_cmd_and_drain() -> tuple[list[str], str]:
    """The Dockerfile's CMD, and the TWEETBOT_DRAIN_S its ENV sets."""
    dockerfile = (REPO / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    instructions = re.sub(r"\\\n", " ", dockerfile)  # continuation lines joined
    env = dict(
        item.split("=", 1)
        for line in re.findall(r"^ENV (.*)$", instructions, re.MULTILINE)
        for item in shlex.split(line)
    )
    return cmd, env["TWEETBOT_DRAIN_S"]


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory) -> Path:
    """A random LSTM of 512 units that never ends a post: each sample runs to its length."""
    model = CharRNN(vocab_size=len(VOCAB), rnn_size=512, num_layers=2, cell="lstm")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))
    variables["params"]["head"]["bias"] = variables["params"]["head"]["bias"].at[EOS].set(-100.0)
    path = tmp_path_factory.mktemp("slow") / "export"
    bundle.write(path, model, variables, VOCAB, metrics={}, train_params={}, data_stats={})
    return path


def in_flight(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return float(re.search(r"^tweetbot_samples_in_flight (\S+)$", response.read().decode(), re.MULTILINE)[1])


def get(port: int) -> tuple[int, str, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    except OSError as error:
        return 0, f"{type(error).__name__}: {error}", {}
    finally:
        connection.close()


def stream(port: int, started: threading.Event) -> list[tuple[str, dict]] | str:
    """The events of one stream of 1000 characters, or what went wrong; `started` once the first came."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("GET", "/stream?prime=The&max_length=1000")
        response = connection.getresponse()
        events, fields = [], {}
        for line in response:  # the prime comes at once, before the row gets a slot
            line = line.decode().rstrip("\r\n")
            if line:
                key, value = line.split(": ", 1)
                fields[key] = value
            elif fields:
                events.append((fields.get("event", "message"), json.loads(fields["data"])))
                fields = {}
                started.set()
        return events
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    finally:
        connection.close()


def sigterm_while_busy(bundle_dir: Path, tmp_path: Path, **env: str) -> dict:
    """Start the image's command, put GETS requests and STREAMS streams in flight, SIGTERM it; what came back."""
    cmd, drain_s = image_cmd_and_drain()
    assert '--timeout-graceful-shutdown "$TWEETBOT_DRAIN_S"' in cmd[-1]
    cmd[-1] = cmd[-1].replace("--host 0.0.0.0", "--host 127.0.0.1")  # loopback only, here
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PORT": str(port),
        "TWEETBOT_BUNDLE": str(bundle_dir),
        "TWEETBOT_DRAIN_S": drain_s,
        "TWEETBOT_MAX_BATCH": "1",
        "TWEETBOT_LOG_LEVEL": "WARNING",
        **env,
    }
    log = tmp_path / "service.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(cmd, cwd=REPO, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not is_ready(url):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with ThreadPoolExecutor(GETS + STREAMS) as pool:
            started = [threading.Event() for _ in range(STREAMS)]
            streams = [pool.submit(stream, port, event) for event in started]
            for event in started:
                assert event.wait(120), "a stream never started"
            gets = [pool.submit(get, port) for _ in range(GETS)]
            deadline = time.monotonic() + 120
            while in_flight(url) < GETS + STREAMS:
                assert time.monotonic() < deadline, "the requests never were all in flight"
                time.sleep(0.01)
            server.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.5)
            refused = get(port)  # a new connection, once the listener has closed
            exit_status = server.wait(timeout=int(environment["TWEETBOT_DRAIN_S"]) + 30)
            exited_s = time.monotonic() - signalled
            answers = [future.result() for future in gets]
            events = [future.result() for future in streams]
    finally:
        if server.poll() is None:
            stop(server, timeout_s=10)
    return {"exit": exit_status, "exited_s": exited_s, "refused": refused, "gets": answers, "streams": events}


def assert_clean(result: dict, drain_s: int) -> None:
    assert result["exit"] in (0, -signal.SIGTERM)  # uvicorn exits by the signal it got, once drained
    assert result["exited_s"] < drain_s + 5
    assert result["refused"][0] == 0  # the listener closed at once
    for status, body, headers in result["gets"]:
        assert status == 200 or (status == 503 and headers["retry-after"] == "1"), body
    for events in result["streams"]:
        assert isinstance(events, list), events
        (kind, done) = events[-1]
        assert kind == "done" and set(done) <= {"model_version", "seed", "interrupted"}
        assert "".join(data["text"] for _, data in events[:-1]).startswith("The")


def summary(result: dict) -> str:
    served = sum(status == 200 for status, _, _ in result["gets"])
    cut = sum(status == 503 for status, _, _ in result["gets"])
    ended = sum(done.get("interrupted") is None for events in result["streams"] for kind, done in events[-1:])
    return (
        f"exit {result['exit']} after {result['exited_s']:.1f} s; GET /: {served} answered, {cut} cut (503); "
        f"streams: {ended} complete, {len(result['streams']) - ended} interrupted"
    )


def test_the_image_drains_in_flight_requests_and_streams_on_sigterm(slow_bundle, tmp_path):
    drain_s = Settings().drain_s
    assert image_cmd_and_drain()[1] == str(drain_s)  # the image's ENV states the settings' default
    result = sigterm_while_busy(slow_bundle, tmp_path)
    print(summary(result))
    assert_clean(result, drain_s)
    for events in result["streams"]:  # a stream that was not cut is the whole sample
        text = "".join(data["text"] for kind, data in events if kind == "message")
        assert events[-1][1].get("interrupted") or len(text) == len("The") + 1000


def test_what_still_runs_at_the_end_of_the_drain_is_cut_cleanly(slow_bundle, tmp_path):
    result = sigterm_while_busy(slow_bundle, tmp_path, TWEETBOT_DRAIN_S="1")  # cut at once
    print(summary(result))
    assert_clean(result, drain_s=1)
    assert any(status == 503 for status, _, _ in result["gets"])
    assert all(events[-1][1].get("interrupted") for events in result["streams"])
