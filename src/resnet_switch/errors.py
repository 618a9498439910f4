"""User errors: one line on stderr naming the field and the fix, exit code 2, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf.errors import OmegaConfBaseException

EXIT_USER_ERROR = 2


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field and the fix."""


def fail(message: str) -> None:
    """Print ``error: message`` (first line only) to stderr and exit with code 2."""
    line = str(message).strip().splitlines()[0] if str(message).strip() else "unknown error"
    print(f"error: {line}", file=sys.stderr, flush=True)
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
