"""`python -m benchmarks [NAME ...]` (`make bench`): run the benchmarks and write their results.

A benchmark is a module `benchmarks/NAME_speed.py` with `main() -> dict`:
    {"title": "...", "rows": [{"column": value, ...}, ...], "notes": ["...", ...]}   (notes optional)
The results go to `benchmarks/results/NAME.json` (with the machine it ran on) and `NAME.md` (markdown).
With no NAME every benchmark runs, one after the other, each in a process of its own. To add one, drop in a new
`*_speed.py`: this runner finds it, so nobody edits this file for it (the sampler's and the trainer's benchmarks
share it this way).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def markdown(result: dict) -> str:
    rows = result["rows"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = [f"## {result['title']}", "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    lines += [""] + [f"- {note}" for note in result.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def _cell(value) -> str:
    return f"{value:,.3g}" if isinstance(value, float) else str(value)


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # others' work on a shared machine skews the figures
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save(name: str, result: dict) -> None:
    """Write `result`, with the machine it ran on, to results/NAME.json and NAME.md, and print the table."""
    result["machine"] = machine()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (RESULTS / f"{name}.md").write_text(table)
    print(table, flush=True)


def main(names: list[str]) -> None:
    names = names or sorted(path.stem.removesuffix("_speed") for path in HERE.glob("*_speed.py"))
    if len(names) == 1:
        print(f"running benchmarks/{names[0]}_speed.py ...", flush=True)
        save(names[0], importlib.import_module(f"benchmarks.{names[0]}_speed").main())
        return
    for name in names:  # each in a process of its own, set up as the process it measures would be (tweetbot.malloc)
        subprocess.run([sys.executable, "-m", "benchmarks", name], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
