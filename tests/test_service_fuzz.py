"""The live service against its own OpenAPI schema: `schemathesis run --checks all`, as a user would run it.

schemathesis generates requests for every operation in `/schema` (its coverage phase: boundary values of each
bound; its fuzzing phase: random ones), valid and invalid, and runs every check it has: no 5xx, a valid
request is accepted and an invalid one refused, and each answer's status code, content type, headers and body
are the ones the schema documents. The service runs under uvicorn on 127.0.0.1; its own Prometheus counters
confirm that no request of the run was answered with a 5xx.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections import Counter

from tests.live_service import live_service
from tests.tiny_bundle import write_tiny_bundle

EXAMPLES_PER_OPERATION = 50  # bounded: the run takes seconds, not minutes


def answered(url: str) -> Counter[str]:
    """The requests answered so far by status code, by the service's own Prometheus counters."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    counts = Counter()
    for status, n in re.findall(r'^tweetbot_requests_total\{.*status="(\d+)"\} (\S+)$', metrics, re.MULTILINE):
        counts[status] += int(float(n))
    return counts


def test_schemathesis_with_every_check_finds_nothing(tmp_path):
    # 64 slots: the largest request (64 samples of 1000 characters) is one batch, so the run stays short.
    with live_service(write_tiny_bundle(tmp_path / "export"), tmp_path / "service.log", TWEETBOT_MAX_BATCH="64") as url:
        before = answered(url)  # the readiness probe's 503s while the service compiled
        report = tmp_path / "schemathesis.json"
        command = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/schema/openapi.json", "--checks", "all"]
        command += ["--max-examples", str(EXAMPLES_PER_OPERATION), "--workers", "1", "--request-timeout", "60"]
        command += ["--generation-database", "none", "--suppress-health-check", "all", "--no-color"]
        command += ["--report", "json", "--report-json-path", str(report)]
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        during = answered(url) - before

    result = json.loads(report.read_text())
    cases = result["test_cases"]
    print(f"schemathesis (seed {result['seed']}): {cases['generated']} cases, {cases['unique_failures']} failures")
    print(f"the service answered {during.total()} requests: {dict(sorted(during.items()))}")
    assert run.returncode == 0, run.stdout[-5000:]
    assert result["operations"]["tested"] == result["operations"]["total"] >= 6
    assert cases["generated"] > 6 * EXAMPLES_PER_OPERATION / 2 and cases["unique_failures"] == 0
    assert not [status for status in during if status.startswith("5")]
