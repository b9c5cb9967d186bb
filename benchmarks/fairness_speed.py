"""Abuse: one client flooding POST /generate beside 8 light clients sending GET /, on uvicorn at 127.0.0.1.

    python -m benchmarks fairness        (or `make bench`)

The light clients (8 keep-alive connections, one request after the other, each from its own source address
in 127.0.0.0/8, so the service sees 8 clients) are timed without and with a heavy client beside them: 4
connections from one address sending `POST /generate` with n 64 and max_length 1000 as fast as they are
answered, whatever the answer (a flood ignores Retry-After). The service runs with its default settings; the
two phases (light clients alone, then with the flood) alternate over rounds so a change in the machine's load
hits both alike, and every phase is bounded in time: 3 rounds x 2 phases x 5 s = 30 s under load in all (the
heavy request under way at the end of a phase is abandoned: its samples leave the engine). The bundle is
models/export when it exists, else a random model of the default `train:` size that never ends a post, so
every sample runs to its length (the worst case: 1000 characters for the heavy client, 280 for a light one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.service_speed import Server, make_bundle
from service.settings import Settings

LIGHT_CLIENTS = 8
HEAVY_CONNECTIONS = 4
HEAVY_BODY = json.dumps({"n": 64, "max_length": 1000}).encode()
ROUNDS = 3
PHASE_S = 5.0
MAX_BATCH = Settings().max_batch  # the service's default, as are its per-client limits


def light_address(index: int) -> str:
    return f"127.0.0.{10 + index}"


HEAVY_ADDRESS = "127.0.0.2"


async def exchange(reader, writer, request: bytes) -> tuple[int, float]:
    """Send one request on a keep-alive connection; (status, seconds) once its whole answer is read."""
    started = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), time.perf_counter() - started


async def connection(port: int, source: str, request: bytes, deadline: float, answers: list) -> None:
    """One connection from `source` sending `request` again and again until `deadline`: (status, s) each.
    The request under way at the deadline is abandoned (the connection closes) and not counted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        while (left := deadline - time.perf_counter()) > 0:
            answers.append(await asyncio.wait_for(exchange(reader, writer, request), left))
    except TimeoutError:
        pass
    except (OSError, asyncio.IncompleteReadError) as error:
        answers.append((f"{type(error).__name__}", 0.0))
    finally:
        writer.close()


def phase(server: Server, flood: bool) -> dict:
    """The light clients' answers, and the heavy client's if `flood`, over PHASE_S seconds."""
    light: list[tuple[int, float]] = []
    heavy: list[tuple[int, float]] = []
    get = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    post = (
        f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(HEAVY_BODY)}\r\n\r\n"
    ).encode() + HEAVY_BODY

    async def run() -> None:
        deadline = time.perf_counter() + PHASE_S
        clients = [connection(server.port, light_address(i), get, deadline, light) for i in range(LIGHT_CLIENTS)]
        if flood:
            clients += [connection(server.port, HEAVY_ADDRESS, post, deadline, heavy) for _ in range(HEAVY_CONNECTIONS)]
        await asyncio.gather(*clients)

    asyncio.run(run())
    settled = time.perf_counter() + 60
    while server.in_flight() and time.perf_counter() < settled:  # the abandoned requests' samples leave
        time.sleep(0.05)
    return {"light": light, "heavy": heavy}


def row(scenario: str, runs: list[dict]) -> dict:
    light = [answer for run in runs for answer in run["light"]]
    heavy = Counter(str(status) for run in runs for status, _ in run["heavy"])
    served = np.array([seconds for status, seconds in light if status == 200]) * 1e3
    return {
        "scenario": scenario,
        "light requests": int(served.size),
        "light p50 ms": float(np.percentile(served, 50)),
        "light p99 ms": float(np.percentile(served, 99)),
        "light errors": len(light) - int(served.size),
        "heavy 200": heavy.pop("200", 0),
        "heavy 429": heavy.pop("429", 0),
        "heavy other": sum(heavy.values()),
    }


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="tweetbot-bench-") as tmp:
        folder = Path(tmp)
        bundle = make_bundle(folder / "export", endless=True)
        cache = folder / "jax-cache"
        server = Server(bundle, cache, folder / "service.log", max_batch=MAX_BATCH)
        runs: dict[str, list[dict]] = {"alone": [], "flood": []}
        try:
            server.wait_compiled()  # no phase waits for a compiler
            for _ in range(ROUNDS):
                runs["alone"].append(phase(server, flood=False))
                runs["flood"].append(phase(server, flood=True))
        finally:
            server.stop()

    rows = [row("8 light clients alone", runs["alone"]), row("8 light clients + 1 heavy client", runs["flood"])]
    alone, flood = (r["light p99 ms"] for r in rows)
    notes = [
        f"bundle: {bundle if bundle == Path('models/export') else 'a random model of the default size, endless'}",
        f"light p99 with the flood / alone: {flood / alone:.2f}x (goal <= 3x)",
        f"light errors with the flood: {rows[1]['light errors']} (goal 0); heavy client's 429s: "
        f"{rows[1]['heavy 429']} (goal > 0)",
        f"{ROUNDS} interleaved rounds of {PHASE_S:.0f} s per phase; heavy: {HEAVY_CONNECTIONS} connections from "
        f"{HEAVY_ADDRESS}, POST /generate n 64 max_length 1000, Retry-After ignored; the clients run on the "
        "same cores as the servers",
    ]
    return {"title": "Fairness under a flood (uvicorn on 127.0.0.1)", "rows": rows, "notes": notes}


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        print(main())
