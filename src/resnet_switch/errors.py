"""User errors and bugs, told apart at the command boundary.

Contract: validation anywhere in the package raises :class:`ConfigError` (a ``ValueError``) whose
message starts with the field and says the fix. At a command's boundary (:func:`user_errors`) only a
``ConfigError`` becomes one line
``error: <message>`` on stderr and exit code 2. Every other exception is a bug: its full traceback is
printed, then one closing line saying where to report it, and the exit code is 1.
Hydra/OmegaConf errors of composing the command line are user errors too: the commands compose once
before any work (:func:`resnet_switch.cli.overrides.check_overrides`) and turn them into ``ConfigError``.
``RESNET_SWITCH_DEBUG=1`` shows the traceback of user errors too.

A library ``ValueError`` raised at a boundary where the input is the user's (``torch.load`` of the
user's file, YAML of the user's file) is converted there, with the field named (e.g.
:mod:`resnet_switch.user_files`), never by catching everything.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_USER_ERROR = 2
EXIT_BUG = 1
DEBUG_ENV = "RESNET_SWITCH_DEBUG"
REPORT_TO = "the resnet_switch issue tracker with the command line you ran"


class ConfigError(ValueError):
    """A value the user gave that cannot work; the message names the field and the fix."""


class MissingFileError(ConfigError, FileNotFoundError):
    """A path the user gave that does not exist (a :class:`ConfigError` and a ``FileNotFoundError``)."""


def debug_enabled() -> bool:
    """``RESNET_SWITCH_DEBUG`` set to anything but ``''``/``0``: user errors show their traceback too."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


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


def bug_closing_line(err: BaseException) -> str:
    return (f"resnet_switch: this is a bug, not a problem with your input ({type(err).__name__}); "
            f"please report it, with the traceback above, to {REPORT_TO}")


@contextmanager
def user_errors() -> Iterator[None]:
    """The command boundary: a :class:`ConfigError` becomes :func:`fail` (one line, exit 2); any other
    exception is a bug: its full traceback, then one closing line saying so, exit code 1."""
    try:
        yield
    except ConfigError as err:
        if debug_enabled():
            raise
        fail(str(err))
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as err:
        traceback.print_exc()
        print(bug_closing_line(err), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BUG) from err
