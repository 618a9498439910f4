"""The entries of one option file of a config group (``conf/<group>/<name>.yaml``), for the small
tools that build what ``train`` builds without composing a whole run (``costs``, ``convert``)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from .overrides import CONF_DIR


def config_defaults(group: str, name: str) -> dict[str, Any]:
    """The entries of ``conf/<group>/<name>.yaml`` (unresolved; interpolations and Hydra's
    ``defaults`` list dropped)."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"), resolve=False)
    raw.pop("defaults", None)  # Hydra's composition list (e.g. model.init), not an entry
    return {k: v for k, v in raw.items() if not (isinstance(v, str) and "${" in v)}
