"""User errors: bad input that the user can fix.

A `UserError` becomes ONE line on stderr and exit status 2 (see `exit_on_user_error`). Anything else is a bug and
keeps its traceback. Every message names the problem and the fix, e.g.
"no bearer token: set X_BEARER_TOKEN to your X API bearer token".
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

USER_ERROR_STATUS = 2

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """Bad input, a missing credential or a refused result: the user can fix it, so no traceback."""


def report(error: UserError) -> None:
    """Print the error as one line on stderr."""
    message = " ".join(str(error).split())  # one line, whatever the message held
    print(f"error: {message}", file=sys.stderr, flush=True)


def exit_on_user_error(main: F) -> F:
    """Decorate an entry point so a UserError exits with status 2 and one line instead of a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            report(error)
            sys.exit(USER_ERROR_STATUS)

    return wrapper  # type: ignore[return-value]
