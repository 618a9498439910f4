"""Checks of command-line overrides made before Hydra starts, so a mistyped group option or key
fails in a second with one line (Hydra's own messages span many lines)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ..errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra configs ship inside the package


def group_options(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_group_choices(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """``method=foo`` where ``conf/method/foo.yaml`` does not exist -> ConfigError naming the options.
    Sweep values (``method=a,b``) are checked one by one."""
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    for item in overrides:
        if "=" not in item or item.startswith(("hydra", "+", "~")):
            continue
        key, value = item.split("=", 1)
        key = key.lstrip("+")
        if key not in groups or value in ("null", ""):
            continue
        for choice in value.split(","):
            if choice.strip() and choice.strip() not in group_options(conf_dir, key):
                raise ConfigError(
                    f"{key}: unknown option {choice.strip()!r}; choose one of {group_options(conf_dir, key)}"
                )


def check_overrides(overrides: Sequence[str], config_name: str, conf_dir: Path = CONF_DIR) -> None:
    """Compose the config once with ``overrides`` (single runs) so unknown keys, bad syntax and
    missing groups become one-line :class:`ConfigError`s before any work starts."""
    check_group_choices(overrides, conf_dir)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            compose(config_name, overrides=list(overrides))
    except Exception as err:  # Hydra raises several unrelated types for bad overrides
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        message = " ".join(lines[:2]) if lines else type(err).__name__
        raise ConfigError(f"overrides: {message}") from None
    finally:
        GlobalHydra.instance().clear()
