"""fetch + preprocess + `tweetbot summary` at 30,000 and 300,000 posts, side by side in one run.

    python -m benchmarks posts          (or `make bench`, which runs every benchmark)

An X archive holds every post an account made, so a store of hundreds of thousands of posts is ordinary. Each
size gets a JSON-lines file of distinct posts (Tiny Shakespeare lines with links, mentions, hashtags, entities
and emoji mixed in, dated a minute apart), read through `fetch.source: file`. Each stage runs as DVC runs it,
`python stages/NAME.py ...` in a folder of its own, and is timed from outside with its peak resident memory
(the child's `ru_maxrss`). The goal: fetch + preprocess of 300,000 posts in 15 s or less at 400 MB or less of
peak memory each, growing no faster than the number of posts, and `tweetbot summary` within 1 s at any size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"
SIZES = (30_000, 300_000)
EXTRAS = [
    " https://example.org/a/{n}",
    " @friend_{m}",
    " #topic{m}",
    " &amp; more",
    " 🚀",
    "",
    "",
]


def write_posts(path: Path, count: int) -> None:
    """`count` distinct posts, a minute apart, in the JSON-lines shape `fetch.source: file` reads."""
    lines = [line.strip() for line in CORPUS.read_text().splitlines() if line.strip()]
    start = 1_300_000_000
    with path.open("w", encoding="utf-8") as out:
        for n in range(count):
            text = f"{lines[n % len(lines)]} {lines[(n * 7 + 3) % len(lines)]}{EXTRAS[n % len(EXTRAS)]} {n}"
            text = text.format(n=n, m=n % 97)
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 60 * n))
            record = {"id": str(10**15 + n), "created_at": created, "text": text}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def measure(command: list[str], cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak resident MB of one child process."""
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    errors = child.stderr.read().decode()
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{errors}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux reports kilobytes


def one_size(count: int, root: Path) -> dict:
    folder = root / str(count)
    folder.mkdir()
    write_posts(folder / "posts.jsonl", count)
    (folder / "params.yaml").write_text("fetch:\n  source: file\n  path: posts.jsonl\n")
    python = sys.executable
    fetch_s, fetch_cpu, fetch_mb = measure([python, str(REPO / "stages/fetch.py"), "data/raw/tweets.jsonl"], folder)
    preprocess_s, preprocess_cpu, preprocess_mb = measure(
        [python, str(REPO / "stages/preprocess.py"), "data/raw/tweets.jsonl", "data/processed"], folder
    )
    tweetbot = str(REPO / ".venv" / "bin" / "tweetbot")
    summary_s, summary_cpu, _ = measure([tweetbot, "summary", "--processed", "data/processed"], folder)
    return {
        "posts": count,
        "fetch s": round(fetch_s, 2),
        "fetch CPU s": round(fetch_cpu, 2),
        "fetch peak MB": round(fetch_mb),
        "preprocess s": round(preprocess_s, 2),
        "preprocess CPU s": round(preprocess_cpu, 2),
        "preprocess peak MB": round(preprocess_mb),
        "fetch + preprocess s": round(fetch_s + preprocess_s, 2),
        "summary s": round(summary_s, 2),
        "summary CPU s": round(summary_cpu, 2),
    }


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_size(count, Path(tmp)) for count in SIZES]
    small, large = rows
    cpu = [row["fetch CPU s"] + row["preprocess CPU s"] for row in rows]
    growth = cpu[1] / cpu[0]
    return {
        "title": "fetch + preprocess + summary by number of posts (fetch.source: file)",
        "rows": rows,
        "notes": [
            f"10x the posts took {growth:.1f}x the CPU time of fetch + preprocess (linear would be 10x; the fixed "
            "cost of starting Python and importing numpy weighs on the small size)",
            "wall seconds include waiting for the CPU on a shared machine (see the load average): CPU seconds are "
            "the steadier figure",
            "goal at 300,000 posts: fetch + preprocess <= 15 s at <= 400 MB peak each; summary <= 1 s at any size",
            "peak MB is each stage process's maximum resident memory (Python, numpy and the data)",
        ],
    }
