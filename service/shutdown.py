"""How the service stops: on SIGTERM (or Ctrl-C) it drains, within TWEETBOT_DRAIN_S seconds, then exits.

    0 s           SIGTERM. uvicorn closes its listener (a new connection is refused) and every idle keep-alive
                  connection; the app stops taking work: /readyz answers 503, and a request that still comes
                  in (on a connection uvicorn had not closed yet) is a 503 with Retry-After.
    0 .. D-1 s    the requests and streams in flight go on as usual, and most end on their own.
    D-1 s         whatever is still being written is cut (service/batching.py `interrupt`): a stream ends with
                  its `done` event, marked `"interrupted": true`; a request gets a 503 with Retry-After.
                  The last second is for writing those answers.
    D s           uvicorn's own bound (`--timeout-graceful-shutdown`, the image passes D): anything still open
                  is cancelled. Then the lifespan stops the model and the process exits.
D is TWEETBOT_DRAIN_S (service/settings.py). ECS sends SIGTERM after a task's load balancer target has begun
draining, and SIGKILL stopTimeout seconds later: a stopTimeout of D + 10 s covers the drain and the exit.

uvicorn installs its signal handlers before the app starts, and its shutdown waits for the requests in flight
but tells the app nothing, so the app adds itself in front of uvicorn's handler for as long as it runs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

FLUSH_S = 1  # the end of the drain, left to write the answers of what was cut
SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_termination(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` (from the signal handler: it must only schedule work) on SIGTERM or SIGINT, then let the
    handler that was there (uvicorn's) act as before. Signals reach the main thread only: elsewhere (a test
    client's thread) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handler(sig: int, frame) -> None:
        callback()
        before = previous[sig]
        if callable(before):
            before(sig, frame)
        elif before == signal.SIG_DFL:  # nobody else listens: the default action (exit) as before
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
