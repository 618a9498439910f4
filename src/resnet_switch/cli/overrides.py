"""Checks of command-line overrides made before Hydra starts, so a mistyped group option or key
fails in a second with one line (Hydra's own messages span many lines)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra configs ship inside the package


# Hydra flags that take a value in the next token (``--config-dir DIR``) unless given as ``--flag=value``
VALUE_FLAGS = {"--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c",
               "--package", "-p", "--experimental-rerun"}
CONFIG_DIR_FLAGS = {"--config-dir", "-cd"}


@dataclass
class HydraArgs:
    """A command line split the way Hydra reads it."""

    overrides: list[str]
    flags: list[str]  # flag names (``-m``, ``--cfg``, ``--config-dir``, ...), values dropped
    config_dirs: list[Path]  # the user's config directories, searched before ours

    @property
    def multirun(self) -> bool:
        return "-m" in self.flags or "--multirun" in self.flags

    @property
    def composes_a_run(self) -> bool:
        """True when Hydra will compose and run the job (not ``--cfg``, ``--help``, ``--info``...)."""
        return not set(self.flags) - CONFIG_DIR_FLAGS - {"-m", "--multirun"}


def parse_hydra_args(argv: Sequence[str]) -> HydraArgs:
    """Overrides, flags and extra config directories (``--config-dir DIR`` and the ``file://`` entries
    of ``hydra.searchpath=[...]``) of a Hydra command line."""
    overrides, flags, dirs = [], [], []
    tokens = iter(argv)
    for token in tokens:
        if not token.startswith("-"):
            overrides.append(token)
            continue
        name, has_value, value = token.partition("=")
        if name in VALUE_FLAGS and not has_value:
            value = next(tokens, "")
        flags.append(name)
        if name in CONFIG_DIR_FLAGS and value:
            dirs.append(Path(value).expanduser().resolve())
    for item in overrides:
        if item.startswith("hydra.searchpath="):
            entries = item.split("=", 1)[1].strip("[]").split(",")
            dirs += [Path(e.strip()[len("file://"):]).resolve() for e in entries if e.strip().startswith("file://")]
    return HydraArgs(overrides, flags, dirs)


# retired train spellings -> (the key now, what its value is); refused with a one-line hint
RENAMED_KEYS = {
    "model.init_from": ("model.init.ckpt", "PATH"),
    "model.init_bn_mode": ("model.init.bn_mode", "nearest|interpolate"),
    "model.init_classifier": ("model.init.classifier", "auto|replace"),
    "model.san_meta_roles": ("method.meta_roles", "auto|all|[body,shortcut]"),
}
# evaluate spells the data settings it overrides as train does
EVALUATE_RENAMED_KEYS = {
    "batch_size": ("data.batch_size", "N"),
    "num_workers": ("data.num_workers", "N"),
}


def check_renamed(overrides: Sequence[str], renamed: dict[str, tuple[str, str]] = RENAMED_KEYS) -> None:
    """``model.init_from=...`` and the other retired keys of ``renamed`` (old key -> (new key,
    example value)) -> one-line :class:`ConfigError` naming the spelling to use."""
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in renamed:
            new_key, value = renamed[key]
            raise ConfigError(f"{key}: renamed; use {new_key}={value}")


def group_options(conf_dirs: Sequence[Path], group: str) -> list[str]:
    """Options of ``group`` over all config directories (``<dir>/<group>/<option>.yaml``)."""
    return sorted({p.stem for d in conf_dirs for p in (Path(d) / group).glob("*.yaml")})


def check_group_choices(overrides: Sequence[str], conf_dirs: Sequence[Path] = (CONF_DIR,)) -> None:
    """``method=foo`` where no ``method/foo.yaml`` exists in any config directory -> ConfigError
    naming the options. Sweep values (``method=a,b``) are checked one by one."""
    groups = {p.name for d in conf_dirs if Path(d).is_dir() for p in Path(d).iterdir() if p.is_dir()}
    for item in overrides:
        if "=" not in item or item.startswith(("hydra", "+", "~")):
            continue
        key, value = item.split("=", 1)
        key = key.lstrip("+")
        if key not in groups or value in ("null", ""):
            continue
        options = group_options(conf_dirs, key)
        for choice in value.split(","):
            if choice.strip() and choice.strip() not in options:
                raise ConfigError(f"{key}: unknown option {choice.strip()!r}; choose one of {options}")


def check_overrides(overrides: Sequence[str], config_name: str, conf_dirs: Sequence[Path] = (CONF_DIR,)) -> None:
    """Compose the config once with ``overrides`` (single runs) so unknown keys, bad syntax and
    missing groups become one-line :class:`ConfigError`s before any work starts. ``conf_dirs``:
    ours first, then the user's (``--config-dir``, ``hydra.searchpath``)."""
    for d in conf_dirs[1:]:
        if not Path(d).is_dir():
            raise ConfigError(f"--config-dir: no directory {d}; give a folder holding your config groups")
    check_group_choices(overrides, conf_dirs)
    extra = [f"file://{d}" for d in conf_dirs[1:]]
    composed = [o for o in overrides if not o.startswith("hydra.searchpath=")]
    if extra:
        composed.append(f"hydra.searchpath=[{','.join(extra)}]")
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dirs[0]), version_base="1.3"):
            compose(config_name, overrides=composed)
    except (HydraException, OmegaConfBaseException) as err:  # composition: the command line's mistakes
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        message = " ".join(lines[:2]) if lines else type(err).__name__
        raise ConfigError(f"overrides: {message}") from None
    finally:
        GlobalHydra.instance().clear()
