"""``key=value`` command lines for the small tools (``costs``, ``bench``, ``export``, ``convert``).

``parse_options(defaults, argv)`` reads ``sys.argv``-style tokens with OmegaConf's CLI grammar for the
values (``resolutions=[224,192]``, ``widths=[1.0,0.75]``, ``format=csv``), merges them over ``defaults``
and checks each value against its default's type. Keys are taken verbatim, so a tool spells a setting
it shares with ``train`` the way ``train`` does (``quant=lq quant.weight_bits=2``, ``method.width_range=...``);
``renamed`` maps a retired spelling to train's, refused with a one-line hint. ``run_tool(main)`` turns
our ``ConfigError`` (one line naming the field and the fix) into ``error: <message>`` on stderr and exit
code 2, no traceback (:func:`resnet_switch.errors.user_errors`: any other exception is a bug).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError, user_errors


def unknown_option(key: str, valid: Sequence[str]) -> ConfigError:
    return ConfigError(f"{key}: unknown option; valid: {', '.join(valid)}")


# the quantizer settings, spelled as in train's ``quant`` group: retired spelling -> train's
QUANT_RENAMED = {"weight_bits": "quant.weight_bits", "act_bits": "quant.act_bits"}


def renamed_option(key: str, new_key: str, value: str) -> ConfigError:
    """``key`` is spelled ``new_key`` now, as ``train`` spells it."""
    return ConfigError(f"{key}: use {new_key}={value} (as in train)")


def parse_options(defaults: Mapping[str, Any], argv: Sequence[str], *, allow_extra: bool = False,
                  renamed: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge ``key=value`` tokens over ``defaults``.

    Keys are verbatim (``quant.weight_bits`` is one key, not a nested one). Returns ``(options, extra)``:
    ``options`` has exactly the keys of ``defaults``; ``extra`` holds keys not in ``defaults`` (only when
    ``allow_extra``; otherwise an unknown key is an error). ``renamed``: retired key -> its spelling now;
    a retired key is refused with ``<key>: use <new key>=<value> (as in train)``.
    """
    given: dict[str, Any] = {}
    raw: dict[str, str] = {}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError(f"{token}: expected key=value, e.g. resolutions=[224,192,160]")
        if renamed and key in renamed:
            raise renamed_option(key, renamed[key], value)
        given[key] = parse_value(key, value)
        raw[key] = value
    extra = {k: v for k, v in given.items() if k not in defaults}
    if extra and not allow_extra:
        raise unknown_option(next(iter(extra)), list(defaults))
    options = dict(defaults)
    for key in defaults:
        if key in given:
            value = given[key]
            if isinstance(defaults[key], str) and isinstance(value, dict):  # text with a colon: "a: b"
                value = raw[key]
            options[key] = check_type(key, value, defaults[key])
    return options, extra


def parse_value(key: str, value: str) -> Any:
    """``value`` read with OmegaConf's command-line grammar (``[224,192]``, ``true``, ``null``, ``0.5``)."""
    try:
        return OmegaConf.to_container(OmegaConf.from_cli([f"value={value}"]), resolve=True)["value"]
    except (yaml.YAMLError, OmegaConfBaseException) as err:  # the user's token: its grammar, not a bug
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key}: cannot parse {value!r} ({reason}); e.g. {key}=[224,192]") from None


def spell_value(value: Any) -> str:
    """``value`` written back in the command-line grammar (``[0.7,1.0]``, ``true``, ``null``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(spell_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{spell_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def check_type(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default`` (``None`` default: anything goes)."""
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list like {key}={list(default)}, got {value!r}")
        return value
    if isinstance(default, str):
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a single value, got {value!r}")
        return str(value)
    return value


def check_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: unknown {value!r}; choose one of {sorted(choices)}")
    return value


def run_tool(main: Callable[[list[str]], Any], argv: Sequence[str]) -> None:
    """Run ``main(argv)``; user errors become one ``error: ...`` line on stderr and exit code 2."""
    with user_errors():
        main(list(argv))
