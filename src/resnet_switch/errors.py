"""User errors: one line on stderr naming the field and the fix, exit code 2, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf.errors import OmegaConfBaseException

EXIT_USER_ERROR = 2


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field and the fix."""


def first_line(message: str) -> str:
    """The line to show: the first one, or for an error re-raised from a DataLoader worker
    ("Caught X in DataLoader worker process 0. ... Original Traceback ...") the original message."""
    lines = [ln.strip() for ln in str(message).strip().splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    if lines[0].startswith("Caught ") and "worker" in lines[0] and len(lines) > 1:
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return lines[0]


def fail(message: str) -> None:
    """Print ``error: message`` (first line only) to stderr and exit with code 2."""
    print(f"error: {first_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn our ``ValueError``/``KeyError``/``FileNotFoundError`` and OmegaConf errors into
    :func:`fail`. Anything else is a bug and keeps its traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError, OmegaConfBaseException) as err:
        fail(str(err))
    except KeyError as err:
        fail(str(err.args[0]) if err.args else "missing key")
