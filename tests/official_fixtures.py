"""Official-layout weight files rebuilt from the compact fixtures in ``tests/data/official/``.

The fixtures hold no weights and no official code. ``tools/make_official_fixtures.py`` instantiated
each official model class (RS-Nets, SAN, MutualNet, slimmable_networks) on the CPU, filled every
tensor by the recipe below, measured BN statistics on seeded batches, and stored:

``<name>.json.gz`` (gzip-compressed JSON; ``zcat`` shows it)
    ``source`` (repository, commit, model class and arguments, the FLAGS it ran with), ``convert``
    (the arguments of ``python -m resnet_switch.convert`` for this file), ``wrap`` (how the
    repository's training script saves it), ``seed``, ``layout`` (every key of the official state
    dict in order: ``[key, shape, dtype, fill]``), ``inputs`` and ``configs`` (the (resolution,
    official width) of each stored logit block) and the BN statistic scales.
``<name>.pt.gz`` (a gzip-compressed ``torch.save`` file, read with ``weights_only=True``)
    ``codes``: the BN statistics as int8 codes (all of them, layout order); ``logits``: the official
    eval-mode logits ``(configs, batch, classes)`` float32 (``ensemble``: RS-Net's ensemble logits).

Recipe: tensor ``i`` of the layout is drawn with ``torch.Generator().manual_seed(seed + i)``:
``["normal", mean, std]`` -> ``normal_(mean, std)``; ``["const", v]`` -> filled with ``v``;
``["bn_mean", scale]`` -> ``code * scale``; ``["bn_var"]`` -> ``2 ** (code / 8)`` (codes taken in
order from ``codes``). The official model was run with exactly these values.

``python -m tests.official_fixtures NAME OUT`` writes the official-layout file of fixture NAME.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import torch

FIXTURE_DIR = Path(__file__).resolve().parent / "data" / "official"
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def fixture_names() -> list[str]:
    return sorted(p.name[: -len(".json.gz")] for p in FIXTURE_DIR.glob("*.json.gz"))


def load_fixture(name: str, folder: Path = FIXTURE_DIR) -> dict:
    """The JSON description plus ``codes``/``logits`` (and ``ensemble`` when stored) tensors."""
    spec = json.loads(gzip.decompress((folder / f"{name}.json.gz").read_bytes()))
    raw = gzip.decompress((folder / f"{name}.pt.gz").read_bytes())
    tensors = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return {**spec, **tensors}


def save_fixture(spec: dict, tensors: dict[str, torch.Tensor], folder: Path = FIXTURE_DIR) -> None:
    """Write ``<name>.json.gz`` and ``<name>.pt.gz`` (byte-identical for identical content)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = spec["name"]
    text = json.dumps(spec, separators=(",", ":")) + "\n"
    (folder / f"{name}.json.gz").write_bytes(gzip.compress(text.encode(), 9, mtime=0))
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    (folder / f"{name}.pt.gz").write_bytes(gzip.compress(buffer.getvalue(), 9, mtime=0))


def fill(shape: list[int], dtype: str, rule: list, generator: torch.Generator) -> torch.Tensor:
    """One tensor of a non-statistics rule (see the module docstring)."""
    kind = rule[0]
    if kind == "normal":
        return torch.empty(shape, dtype=DTYPES[dtype]).normal_(rule[1], rule[2], generator=generator)
    if kind == "const":
        return torch.full(shape, rule[1], dtype=DTYPES[dtype])
    raise ValueError(f"unknown fill rule {rule!r}")


def build_state_dict(fixture: dict) -> dict[str, torch.Tensor]:
    """The official state dict (keys as the model's ``state_dict()``, no ``module.`` prefix)."""
    codes = fixture["codes"]
    offset = 0
    state = {}
    for i, (key, shape, dtype, rule) in enumerate(fixture["layout"]):
        if rule[0] in ("bn_mean", "bn_var"):
            n = int(torch.Size(shape).numel())
            c = codes[offset: offset + n].float().view(shape)
            offset += n
            state[key] = c * rule[1] if rule[0] == "bn_mean" else torch.exp2(c / 8)
        else:
            state[key] = fill(shape, dtype, rule, torch.Generator().manual_seed(fixture["seed"] + i))
    if offset != codes.numel():
        raise ValueError(f"fixture uses {offset} statistic codes but stores {codes.numel()}")
    return state


def official_input(fixture: dict, resolution: int) -> torch.Tensor:
    """The seeded input ``(batch, 3, r, r)`` the official logits at ``resolution`` were taken on."""
    inputs = fixture["inputs"]
    gen = torch.Generator().manual_seed(inputs["seed"] * 10_000 + resolution)
    return torch.randn(inputs["batch"], 3, resolution, resolution, generator=gen)


def wrapped(fixture: dict, state: dict[str, torch.Tensor]) -> dict:
    """``state`` saved the way the repository's training script saves it: DataParallel's
    ``module.`` prefix, inside ``{'state_dict': ...}`` (RS-Nets, SAN) or ``{'model': ...}``
    (MutualNet, slimmable_networks); ``wrap: null`` is a bare state dict."""
    wrap = fixture["wrap"]
    if wrap is None:
        return state
    return {wrap["key"]: {f"{wrap['prefix']}{k}": v for k, v in state.items()}, **wrap.get("extra", {})}


def write_official_file(name: str, out: str | Path) -> Path:
    fixture = load_fixture(name)
    out = Path(out)
    torch.save(wrapped(fixture, build_state_dict(fixture)), out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in fixture_names():
        print(f"usage: python -m tests.official_fixtures NAME OUT.pth  (NAME: {', '.join(fixture_names())})",
              file=sys.stderr)
        raise SystemExit(2)
    print(write_official_file(sys.argv[1], sys.argv[2]))
