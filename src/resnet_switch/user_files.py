"""Reading files the user names (``model.pretrained=``, ``claims=``): the boundary where a library's
error about the file's content becomes a one-line :class:`~resnet_switch.errors.ConfigError` naming
the field. Only the reading is guarded; what the caller does with the content is not."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from .errors import ConfigError, MissingFileError


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:120]


def existing_file(path: str | os.PathLike, field: str, hint: str) -> Path:
    """``path`` as a ``Path`` when it is a file; :class:`MissingFileError` ``<field>: no file <path>; <hint>``."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{field}: no file {p}; {hint}")
    return p


def read_torch_file(path: str | os.PathLike, field: str, hint: str, what: str = "a PyTorch file",
                    error: type[ConfigError] = ConfigError) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU of a file the user named.

    Only this call is guarded: whatever ``torch.load`` raises on it (the exception types differ with
    the file's damage: ``UnpicklingError``, ``RuntimeError``, ``EOFError``, even ``IndexError`` for a
    text file) means the file is not one it can read: ``error`` (a :class:`ConfigError`)
    ``<field>: <path> is damaged, truncated or not <what> (<reason>); <hint>``."""
    import torch

    p = existing_file(path, field, hint)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # torch's wording for a pickle that names code
            raise error(f"{field}: {p} is damaged, truncated or not {what} (UnpicklingError); {hint}") from err
        raise error(f"{field}: {p} holds objects torch.load(weights_only=True) refuses ({_reason(err)}); "
                    f"{hint}") from err
    except Exception as err:  # noqa: BLE001 - the user's file, see the docstring
        raise error(f"{field}: {p} is damaged, truncated or not {what} ({type(err).__name__}: "
                    f"{_reason(err)}); {hint}") from err


def load_tensor_dict(path: str | os.PathLike, field: str) -> dict[str, Any]:
    """A ``torch.save``-d state dict (:func:`read_torch_file`); content that is not a mapping of names
    to tensors is a :class:`ConfigError` naming ``field`` too."""
    import torch

    hint = "give a torchvision-style state dict: torch.save(model.state_dict(), f)"
    state = read_torch_file(path, field, hint)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{field}: {path} holds a {type(state).__name__}, not a state dict of tensors; {hint}")
    return state


def load_yaml(path: str | os.PathLike, field: str, hint: str) -> Any:
    """The plain content of a YAML file; a missing file or a YAML syntax error is a :class:`ConfigError`
    naming ``field`` (``hint``: what the file should hold)."""
    import yaml

    p = existing_file(path, field, hint)
    try:
        return yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{field}: {p} is not valid YAML ({_reason(err)}); {hint}") from err


def load_json(path: str | os.PathLike, field: str, hint: str) -> Any:
    """The content of a JSON file the user pointed at (directly or through a results folder); a missing
    file or invalid JSON is a :class:`ConfigError` naming ``field``."""
    import json

    p = existing_file(path, field, hint)
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{field}: {p} is not valid JSON ({_reason(err)}); {hint}") from err
