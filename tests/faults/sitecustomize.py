"""Fault injection for tests/test_train_faults.py: a child Python with this folder on PYTHONPATH imports it at
start-up (Python's `sitecustomize` hook), so the process under test is the real `python stages/train.py ...` and
production code carries no test hook.

It numbers the process's write points under its working directory: a file opened for writing, a rename onto a
path (how tweetbot.atomic commits a file), a deletion. With

    TWEETBOT_FAULTS_TRACE=FILE      each write point is appended to FILE as a line `INDEX KIND PATH`;
    TWEETBOT_FAULTS_KILL=INDEX:WHEN the process SIGKILLs itself at write point INDEX: `before` it happens, or
                                    `torn` (a file opened for writing): after half of its first write.

Without either variable, nothing is patched.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import signal

TRACE = os.environ.get("TWEETBOT_FAULTS_TRACE")
KILL = os.environ.get("TWEETBOT_FAULTS_KILL")
ROOT = os.getcwd()
WRITE_MODES = set("wax+")


class _Points:
    def __init__(self):
        self.count = 0
        index, _, when = (KILL or "-1:before").partition(":")
        self.kill_at, self.kill_when = int(index), when

    def reached(self, kind: str, path) -> str | None:
        """Note a write point; returns how to die at it (`before` has already happened), or None."""
        relative = os.path.relpath(os.path.abspath(os.fspath(path)), ROOT)
        if relative.startswith(".."):
            return None
        index, self.count = self.count, self.count + 1
        if TRACE:
            with _real_open(TRACE, "a") as trace:
                trace.write(f"{index} {kind} {relative}\n")
        if index != self.kill_at:
            return None
        if self.kill_when == "before":
            die()
        return self.kill_when


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _TornFile:
    """A file that dies half-way through its first write."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        self._file.write(data[: max(1, len(data) // 2)])
        self._file.flush()
        die()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _open(file, mode="r", *args, **kwargs):
    if isinstance(file, int) or not WRITE_MODES & set(mode):
        return _real_open(file, mode, *args, **kwargs)
    how = POINTS.reached("open", file)
    opened = _real_open(file, mode, *args, **kwargs)
    return _TornFile(opened) if how == "torn" else opened


def _replace(source, destination, **kwargs):
    POINTS.reached("replace", destination)
    return _real_replace(source, destination, **kwargs)


def _unlink(path, *, dir_fd=None):
    if dir_fd is None and os.path.lexists(path):  # dir_fd: inside rmtree, which counts as one point
        POINTS.reached("unlink", path)
    return _real_unlink(path, dir_fd=dir_fd)


def _rmtree(path, *args, **kwargs):
    if os.path.lexists(path):
        POINTS.reached("rmtree", path)
    return _real_rmtree(path, *args, **kwargs)


if TRACE or KILL:
    POINTS = _Points()
    _real_open, _real_replace, _real_unlink, _real_rmtree = io.open, os.replace, os.unlink, shutil.rmtree
    builtins.open = io.open = _open  # pathlib opens through io.open
    os.replace = _replace
    os.unlink = os.remove = _unlink
    shutil.rmtree = _rmtree
