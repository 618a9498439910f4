"""``key=value`` command lines for the small tools (``costs``, ``bench``).

``parse_options(defaults, argv)`` reads ``sys.argv``-style tokens with OmegaConf's CLI grammar
(``resolutions=[224,192]``, ``widths=[1.0,0.75]``, ``format=csv``), merges them over ``defaults`` and
checks each value against its default's type. ``run_tool(main)`` turns our ``ValueError`` (one line
naming the field and the fix) into ``error: <message>`` on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

from ..errors import user_errors


def unknown_option(key: str, valid: Sequence[str]) -> ValueError:
    return ValueError(f"{key}: unknown option; valid: {', '.join(valid)}")


def parse_options(defaults: Mapping[str, Any], argv: Sequence[str], *,
                  allow_extra: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge ``key=value`` tokens over ``defaults``.

    Returns ``(options, extra)``: ``options`` has exactly the keys of ``defaults``; ``extra`` holds
    keys not in ``defaults`` (only when ``allow_extra``; otherwise an unknown key is an error).
    """
    given: dict[str, Any] = {}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ValueError(f"{token}: expected key=value, e.g. resolutions=[224,192,160]")
        try:
            parsed = OmegaConf.to_container(OmegaConf.from_cli([token]), resolve=True)
        except Exception as err:  # yaml / grammar errors: report the token, not a traceback
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{key}: cannot parse {value!r} ({reason}); e.g. {key}=[224,192]") from None
        given.update(parsed)
    extra = {k: v for k, v in given.items() if k not in defaults}
    if extra and not allow_extra:
        raise unknown_option(next(iter(extra)), list(defaults))
    options = dict(defaults)
    for key in defaults:
        if key in given:
            options[key] = check_type(key, given[key], defaults[key])
    return options, extra


def check_type(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default`` (``None`` default: anything goes)."""
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list like {key}={list(default)}, got {value!r}")
        return value
    if isinstance(default, str):
        if isinstance(value, (dict, list)):
            raise ValueError(f"{key}: expected a single value, got {value!r}")
        return str(value)
    return value


def check_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{key}: unknown {value!r}; choose one of {sorted(choices)}")
    return value


def run_tool(main: Callable[[list[str]], Any], argv: Sequence[str]) -> None:
    """Run ``main(argv)``; user errors become one ``error: ...`` line on stderr and exit code 2."""
    with user_errors():
        main(list(argv))
