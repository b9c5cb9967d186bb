"""User errors are one line and exit status 2; bugs keep their traceback."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import sys
from tweetbot.runtime.errors import UserError, exit_on_user_error

@exit_on_user_error
def main(kind):
    if kind == "user":
        raise UserError("no bearer token:\\n set X_BEARER_TOKEN")
    raise RuntimeError("a bug")

main(sys.argv[1])
"""


def run(kind: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, kind], capture_output=True, text=True)


def test_user_error_is_one_line_and_status_2():
    result = run("user")
    assert result.returncode == 2
    assert result.stderr == "error: no bearer token: set X_BEARER_TOKEN\n"


def test_a_bug_keeps_its_traceback():
    result = run("bug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr
