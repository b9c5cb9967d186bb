"""Service load test: uvicorn on 127.0.0.1, continuous batching on and off side by side, cold start to ready.

    python -m benchmarks service        (or `make bench`, which runs every benchmark)

Two servers run the same bundle at once, one batching (TWEETBOT_MAX_BATCH=32) and one not (=1). 32 concurrent
keep-alive clients call `GET /` on each in turn, interleaved over several rounds so a change in the machine's
load hits both alike; every phase is bounded in time. Also: `GET /` latency with one client (unloaded), and
process start to `/readyz` 200 with an empty and with a warm JAX compilation cache. All clients come from
127.0.0.1, one client to the service, so the per-client limits are off here (benchmarks/fairness_speed.py
measures them). The bundle is models/export when it exists, else a randomly initialised model of the default
`train:` size (the sampler runs the same steps for it; its near-uniform draws end a post after about 100
characters, as the end-of-post symbol is one of 96).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from tests.live_service import free_port, is_ready, stop

CLIENTS = 32
ROUNDS = 3
PHASE_S = 5.0  # per round and server: 3 rounds x 2 servers x 5 s = 30 s under load in all
UNLOADED_REQUESTS = 200
READY_TIMEOUT_S = 600
EXPORTED = Path("models/export")


def make_bundle(folder: Path, endless: bool = False) -> Path:
    """models/export, or a random model of the default size when nothing has been exported yet; `endless`:
    one that never ends a post (every sample runs to its length)."""
    from tweetbot.runtime import bundle

    if (EXPORTED / bundle.MANIFEST).exists():
        return EXPORTED
    import jax
    import jax.numpy as jnp

    from tweetbot.params import TrainParams
    from tweetbot.runtime.model import CharRNN
    from tweetbot.runtime.vocab import EOS, Vocab

    train = TrainParams()
    vocab = Vocab([chr(c) for c in range(32, 127)])
    model = CharRNN(len(vocab), train.rnn_size, train.num_layers, train.model)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))
    if endless:
        variables["params"]["head"]["bias"] = variables["params"]["head"]["bias"].at[EOS].set(-100.0)
    bundle.write(folder, model, variables, vocab, metrics={}, train_params={}, data_stats={})
    return folder


def no_client_limits(max_batch: int) -> dict[str, str]:
    """The settings that turn every per-client limit off (service/fairness.py)."""
    return {"TWEETBOT_CLIENT_RATE": "0", "TWEETBOT_CLIENT_SAMPLES": "100000", "TWEETBOT_CLIENT_SLOTS": str(max_batch)}


class Server:
    """uvicorn serving a bundle; `started_s` is process start to /readyz 200."""

    def __init__(self, bundle: Path, cache: Path, log: Path, max_batch: int, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {
            **os.environ,
            "TWEETBOT_BUNDLE": str(bundle),
            "TWEETBOT_COMPILE_CACHE": str(cache),
            "TWEETBOT_MAX_BATCH": str(max_batch),
            **env,
        }
        command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
        command += ["--port", str(self.port)]
        started = time.perf_counter()
        with open(log, "w") as log_file:
            self.process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        while not is_ready(self.url):
            if self.process.poll() is not None or time.perf_counter() - started > READY_TIMEOUT_S:
                self.stop()
                raise RuntimeError(f"the service did not become ready: see {log}")
            time.sleep(0.05)
        self.started_s = time.perf_counter() - started

    def stop(self) -> None:
        stop(self.process, timeout_s=10)

    def wait_compiled(self) -> None:
        """Until every batch size is compiled (ready comes after the first: the others compile meanwhile)."""
        deadline = time.perf_counter() + READY_TIMEOUT_S
        while "all batch sizes compiled" not in self.log.read_text():
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the service did not compile every batch size: see {self.log}")
            time.sleep(0.1)

    def metric(self, name: str) -> float:
        """The value of `name` (no labels) in the service's Prometheus metrics, 0 when absent."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def batches(self) -> tuple[float, float]:
        """(sampler calls, rows) so far."""
        return self.metric("tweetbot_batch_size_count"), self.metric("tweetbot_batch_size_sum")

    def in_flight(self) -> float:
        return self.metric("tweetbot_samples_in_flight")


async def client(port: int, path: str, deadline: float, latencies: list, errors: list, limit: int | None):
    """One keep-alive HTTP/1.1 client calling `GET path` until `deadline` (or `limit` requests)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline and (limit is None or len(latencies) < limit):
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200") or not body.startswith(b"{"):
                errors.append(head.split(b"\r\n", 1)[0].decode())
                continue
            latencies.append(time.perf_counter() - started)
    except (OSError, asyncio.IncompleteReadError) as error:
        errors.append(f"{type(error).__name__}: {error}")
    finally:
        writer.close()


def load(server: Server, clients: int, seconds: float, limit: int | None = None, path: str = "/") -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    batches_before, rows_before = server.batches()

    async def run() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(server.port, path, deadline, latencies, errors, limit) for _ in range(clients)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    batches_after, rows_after = server.batches()
    batches, rows = batches_after - batches_before, rows_after - rows_before
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed, "batches": batches, "rows": rows}


def summary(scenario: str, batching: str, runs: list[dict]) -> dict:
    latencies = np.array([x for run in runs for x in run["latencies"]]) * 1e3
    elapsed = sum(run["elapsed"] for run in runs)
    batches, rows = sum(run["batches"] for run in runs), sum(run["rows"] for run in runs)
    return {
        "scenario": scenario,
        "batching": batching,
        "requests": int(latencies.size),
        "requests/s": latencies.size / elapsed,
        "p50 ms": float(np.percentile(latencies, 50)),
        "p99 ms": float(np.percentile(latencies, 99)),
        "errors": sum(len(run["errors"]) for run in runs),
        "mean batch": rows / batches if batches else 0.0,
    }


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="tweetbot-bench-") as tmp:
        folder = Path(tmp)
        bundle = make_bundle(folder / "export")
        cache = folder / "jax-cache"
        # Cold start: an empty compilation cache (a fresh container); warm: a restart that finds it filled.
        first = Server(bundle, cache, folder / "cold.log", max_batch=CLIENTS, **no_client_limits(CLIENTS))
        first.stop()
        batched = Server(bundle, cache, folder / "batched.log", max_batch=CLIENTS, **no_client_limits(CLIENTS))
        unbatched = Server(bundle, cache, folder / "unbatched.log", max_batch=1, **no_client_limits(1))
        try:
            servers = {"on": batched, "off": unbatched}
            unloaded = {name: load(s, 1, 60.0, limit=UNLOADED_REQUESTS) for name, s in servers.items()}
            loaded: dict[str, list[dict]] = {"on": [], "off": []}
            for _ in range(ROUNDS):
                for name, server in servers.items():
                    loaded[name].append(load(server, CLIENTS, PHASE_S))
            # The same clients on a route that never touches the model: what HTTP alone allows here.
            ceiling = load(batched, CLIENTS, PHASE_S, path="/healthz")
        finally:
            batched.stop()
            unbatched.stop()

    rows = [summary("GET /, 1 client (unloaded)", name, [run]) for name, run in unloaded.items()]
    rows += [summary(f"GET /, {CLIENTS} clients", name, runs) for name, runs in loaded.items()]
    rows += [summary(f"GET /healthz, {CLIENTS} clients (no model)", "-", [ceiling])]
    on, off = rows[2]["requests/s"], rows[3]["requests/s"]
    errors = sum(row["errors"] for row in rows)
    notes = [
        f"bundle: {bundle if bundle == EXPORTED else 'a random model of the default train: size'}",
        f"batched / unbatched throughput at {CLIENTS} clients: {on / off:.2f}x (goal >= 5x)",
        f"GET / p50 unloaded, batching on: {rows[0]['p50 ms']:.1f} ms (goal <= 25 ms)",
        f"cold start to ready: {first.started_s:.1f} s with an empty compilation cache, "
        f"{batched.started_s:.1f} s with a warm one (goal <= 10 s)",
        f"errors: {errors} (goal 0); {ROUNDS} interleaved rounds of {PHASE_S:.0f} s per server; the load "
        "client runs on the same cores as the server",
    ]
    return {
        "title": "Service load (uvicorn on 127.0.0.1, GET /)",
        "rows": rows,
        "notes": notes,
        "cold_start_s": {"empty_cache": first.started_s, "warm_cache": batched.started_s},
        "batched_over_unbatched": on / off,
    }


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(main())
