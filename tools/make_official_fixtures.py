"""Write the test data of ``tests/data/official/`` by running the OFFICIAL model code on the CPU.

Nothing of the official repositories is copied: their model classes are imported from the paths
given on the command line, instantiated, filled by the seeded recipe of ``tests/official_fixtures.py``
and run; only the state-dict layout, the recipe, the (8-bit coded) BN statistics and the logits are
written. Re-run (from the repository root, about a minute of CPU)::

    git clone https://github.com/yikaiw/RS-Nets && git -C RS-Nets checkout 992fd99
    git clone https://github.com/d-li14/SAN && git -C SAN checkout 6f2623f
    git clone https://github.com/taoyang1122/MutualNet && git -C MutualNet checkout 8588194
    git clone https://github.com/JiahuiYu/slimmable_networks && git -C slimmable_networks checkout 5dc14d0
    PYTHONPATH=src python tools/make_official_fixtures.py --rsnets RS-Nets --san SAN \\
        --mutualnet MutualNet --slimmable slimmable_networks [--only NAME ...]

What the old code needs at run time (patched here, never in their files): SAN calls ``.cuda()`` on
its scale tensors (made a no-op); MutualNet and slimmable_networks read a global ``FLAGS`` from
``utils.config`` at import time, which parses the command line (a stub module holding the FLAGS of
each fixture is put in ``sys.modules``; their ``models`` package is re-imported per fixture because
``slimmable_ops`` reads ``FLAGS.width_mult_range`` when imported).

Per fixture: every parameter gets ``normal(mean, std)`` with a std that keeps activations at unit
scale; BN statistics are exact averages (``momentum=None``) over 3 seeded batches in train mode, per
private BN set (RS-Nets, SAN: each set sees its resolution) or per width (US-Nets, MutualNet,
S-Nets: each width's statistics), then coded to 8 bits (``mean = scale * code``, ``var = 2 **
(code / 8)``) and loaded back, so the stored codes are exactly what the official model ran with.
Logits: eval mode, one seeded batch per resolution, every (resolution, width).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.official_fixtures import FIXTURE_DIR, build_state_dict, official_input, save_fixture  # noqa: E402

SEED = 1234
STAT_BATCHES, STAT_BATCH_SIZE, LOGIT_BATCH = 3, 4, 2
NUM_CLASSES = 10
DEFAULT_RES = [224, 192, 160, 128, 96]


@dataclass
class Fixture:
    name: str
    repo: str  # rsnets | san | mutualnet | slimmable | torchvision
    module: str  # importable from the repository root (or torchvision.models)
    factory: str  # callable in that module
    kwargs: dict
    convert: dict  # arguments of python -m resnet_switch.convert (besides src/out)
    resolutions: list[int]  # input sizes the logits are taken at
    widths: list[float] = field(default_factory=lambda: [1.0])  # official (absolute) widths
    flags: dict | None = None  # FLAGS for MutualNet / slimmable_networks
    wrap: dict | None = None


def rs_wrap(arch: str) -> dict:
    return {"key": "state_dict", "prefix": "module.", "extra": {"epoch": 120, "arch": arch}}


def slim_wrap() -> dict:
    return {"key": "model", "prefix": "module.", "extra": {"last_epoch": 249}}


def fixtures() -> list[Fixture]:
    rn50_res, mut_res = [128, 96, 64], [160, 128, 96]
    nc = {"num_classes": NUM_CLASSES}
    return [
        Fixture("rsnets_resnet18", "rsnets", "models.imagenet.parallel_resnet", "parallel_resnet18",
                {**nc, "num_parallel": 5}, {"format": "rsnets", "model": "resnet18"}, DEFAULT_RES,
                wrap=rs_wrap("parallel_resnet18")),
        Fixture("rsnets_resnet50", "rsnets", "models.imagenet.parallel_resnet", "parallel_resnet50",
                {**nc, "num_parallel": 3}, {"format": "rsnets", "model": "resnet50", "resolutions": rn50_res},
                rn50_res, wrap=rs_wrap("parallel_resnet50")),
        Fixture("rsnets_mobilenetv2", "rsnets", "models.imagenet.parallel_mobilenetv2", "parallel_mobilenetv2",
                {**nc, "num_parallel": 5}, {"format": "rsnets", "model": "mobilenetv2"}, DEFAULT_RES,
                wrap=rs_wrap("parallel_mobilenetv2")),
        Fixture("san_resnet18", "san", "models.imagenet.meta_resnet", "meta_resnet18",
                {**nc, "num_parallel": 5}, {"format": "san", "model": "resnet18"}, DEFAULT_RES,
                wrap=rs_wrap("meta_resnet18")),
        Fixture("san_resnet50", "san", "models.imagenet.meta_resnet", "meta_resnet50",
                {**nc, "num_parallel": 3}, {"format": "san", "model": "resnet50", "resolutions": rn50_res},
                rn50_res, wrap=rs_wrap("meta_resnet50")),
        Fixture("san_mobilenetv2", "san", "models.imagenet.meta_mobilenetv2", "meta_mobilenetv2",
                {**nc, "num_parallel": 5}, {"format": "san", "model": "mobilenetv2"}, DEFAULT_RES,
                wrap=rs_wrap("meta_mobilenetv2")),
        Fixture("san_individual_resnet18", "torchvision", "torchvision.models", "resnet18", nc,
                {"format": "san", "model": "resnet18", "resolutions": [160]}, [160], wrap=None),
        Fixture("mutualnet_mobilenet_v1", "mutualnet", "models.mobilenet_v1", "Model",
                {**nc, "input_size": 224}, {"format": "mutualnet", "model": "mobilenetv1", "resolutions": mut_res,
                                            "widths": [0.25, 0.6, 1.0]},
                mut_res, [0.25, 0.6, 1.0], {"width_mult_range": [0.25, 1.0], "width_mult_list": [0.25, 0.6, 1.0]},
                slim_wrap()),
        Fixture("mutualnet_mobilenet_v2", "mutualnet", "models.mobilenet_v2", "Model",
                {**nc, "input_size": 224}, {"format": "mutualnet", "model": "mobilenetv2", "resolutions": mut_res},
                mut_res, [0.7, 0.9, 1.0], {"width_mult_range": [0.7, 1.0], "width_mult_list": [0.7, 0.9, 1.0]},
                slim_wrap()),
        Fixture("mutualnet_resnet50", "mutualnet", "models.resnet", "Model",
                {**nc, "input_size": 224}, {"format": "mutualnet", "model": "resnet50", "resolutions": [96, 64],
                                            "widths": [0.65, 0.9, 1.0]},
                [96, 64], [0.65, 0.9, 1.0], {"width_mult_range": [0.65, 1.0], "width_mult_list": [0.65, 0.9, 1.0],
                                             "depth": 50}, slim_wrap()),
        Fixture("mutualnet_mobilenet_v1_wide", "mutualnet", "models.mobilenet_v1", "Model",
                {**nc, "input_size": 224}, {"format": "mutualnet", "model": "mobilenetv1", "resolutions": [96, 64],
                                            "widths": [1.0, 1.6, 2.0]},
                [96, 64], [1.0, 1.6, 2.0], {"width_mult_range": [1.0, 2.0], "width_mult_list": [1.0, 1.6, 2.0]},
                None),
        Fixture("usnet_mobilenet_v1", "slimmable", "models.us_mobilenet_v1", "Model",
                {**nc, "input_size": 64}, {"format": "usnet", "model": "mobilenetv1", "resolutions": [64],
                                           "widths": [0.1, 0.25, 0.6, 1.0]},
                [64], [0.1, 0.25, 0.6, 1.0], {"width_mult_range": [0.25, 1.0], "width_mult_list": [0.1, 0.25, 0.6, 1.0]},
                slim_wrap()),
        Fixture("usnet_mobilenet_v2", "slimmable", "models.us_mobilenet_v2", "Model",
                {**nc, "input_size": 64}, {"format": "usnet", "model": "mobilenetv2", "resolutions": [64],
                                           "widths": [0.35, 0.7, 1.0]},
                [64], [0.35, 0.7, 1.0], {"width_mult_range": [0.35, 1.0], "width_mult_list": [0.35, 0.7, 1.0]},
                slim_wrap()),
        Fixture("snet_mobilenet_v1", "slimmable", "models.s_mobilenet_v1", "Model",
                {**nc, "input_size": 64}, {"format": "snet", "model": "mobilenetv1", "resolutions": [64]},
                [64], [0.25, 0.5, 0.75, 1.0], {"width_mult_list": [0.25, 0.5, 0.75, 1.0]}, slim_wrap()),
        Fixture("snet_mobilenet_v2", "slimmable", "models.s_mobilenet_v2", "Model",
                {**nc, "input_size": 64}, {"format": "snet", "model": "mobilenetv2", "resolutions": [64]},
                [64], [0.35, 0.5, 0.75, 1.0], {"width_mult_list": [0.35, 0.5, 0.75, 1.0]}, slim_wrap()),
        Fixture("snet_resnet50", "slimmable", "models.s_resnet", "Model",
                {**nc, "input_size": 64}, {"format": "snet", "model": "resnet50", "resolutions": [64]},
                [64], [0.25, 0.5, 0.75, 1.0], {"width_mult_list": [0.25, 0.5, 0.75, 1.0], "depth": 50}, None),
    ]


# ------------------------------------------------------------------------------ official code
class Flags(dict):
    """The attribute dict their ``utils.config.FLAGS`` is."""

    __getattr__ = dict.get


def purge_modules() -> None:
    for name in list(sys.modules):
        if name in ("models", "utils") or name.startswith(("models.", "utils.")):
            del sys.modules[name]


def import_official(root: Path, module: str, flags: dict | None):
    """Import ``module`` from ``root`` with a stub ``utils.config`` holding ``flags``."""
    purge_modules()
    if flags is not None:
        utils = types.ModuleType("utils")
        utils.__path__ = []
        config = types.ModuleType("utils.config")
        config.FLAGS = Flags(reset_parameters=False, dataset="imagenet1k", **flags)
        utils.config = config
        sys.modules["utils"], sys.modules["utils.config"] = utils, config
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(root))


@contextlib.contextmanager
def cpu_cuda():
    """``tensor.cuda()`` returns the tensor itself (SAN moves its scale encodings to the GPU)."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def commit_of(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------------------------- recipe
def fill_rule(model: nn.Module, key: str, tensor: torch.Tensor) -> list:
    """How tensor ``key`` is drawn: BN affine near (1, 0), convs and meta-learners at a fan-in std
    (unit-scale activations), classifiers at 1/sqrt(fan_in), counters constant."""
    module_name, _, leaf = key.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if tensor.dtype == torch.int64:
        return ["const", STAT_BATCHES]
    if leaf == "alpha":
        return ["normal", 0.0, 0.5]
    if isinstance(module, nn.BatchNorm2d):
        return ["normal", 1.0, 0.1] if leaf == "weight" else ["normal", 0.0, 0.1]
    if isinstance(module, nn.Conv2d):
        fan_in = tensor[0].numel()
        return ["normal", 0.0, math.sqrt(2.0 / fan_in)] if leaf == "weight" else ["normal", 0.0, 0.1]
    if isinstance(module, nn.Linear) and module.in_features == 1:  # SAN meta-learner: kernel = eps*W + b
        conv_fan_in = meta_fan_in(model, module_name, module.out_features)
        return ["normal", 0.0, math.sqrt(2.0 / conv_fan_in / 1.25)]
    if isinstance(module, nn.Linear):
        return ["normal", 0.0, 1.0 / math.sqrt(module.in_features)] if leaf == "weight" else ["normal", 0.0, 0.1]
    raise ValueError(f"no fill rule for {key} ({type(module).__name__})")


def meta_fan_in(model: nn.Module, module_name: str, numel: int) -> int:
    """Fan-in ``Cin/groups * k * k`` of the conv a SAN meta-learner generates (``numel = Cout * fan_in``)."""
    owner = model.get_submodule(module_name.rpartition(".")[0]) if "." in module_name else model
    leaf = module_name.rpartition(".")[2]
    if hasattr(owner, "oup") and leaf == "fc":  # conv_3x3_bn / conv_1x1_bn
        return numel // owner.oup
    if hasattr(owner, "hidden_dim"):  # MobileNetV2 InvertedResidual
        outs = ({"fc1": owner.hidden_dim, "fc2": owner.oup} if owner.expand_ratio == 1
                else {"fc1": owner.hidden_dim, "fc2": owner.hidden_dim, "fc3": owner.oup})
        return numel // outs[leaf]
    if hasattr(owner, "width"):  # Bottleneck
        exp = owner.planes * owner.expansion
        outs = {"fc1": owner.width, "fc2": owner.width, "fc3": exp, "fc4": exp}
        return numel // outs[leaf]
    return numel // owner.planes  # BasicBlock: every meta conv has `planes` outputs


def layout_of(model: nn.Module) -> list[list]:
    rows = []
    for key, tensor in model.state_dict().items():
        leaf = key.rpartition(".")[2]
        dtype = "int64" if tensor.dtype == torch.int64 else "float32"
        rule = ["bn_stat"] if leaf in ("running_mean", "running_var") else fill_rule(model, key, tensor)
        rows.append([key, list(tensor.shape), dtype, rule])
    return rows


@torch.no_grad()
def fill_parameters(model: nn.Module, layout: list[list]) -> None:
    from tests.official_fixtures import fill

    state = model.state_dict()
    for i, (key, shape, dtype, rule) in enumerate(layout):
        if rule[0] != "bn_stat":
            state[key].copy_(fill(shape, dtype, rule, torch.Generator().manual_seed(SEED + i)))


@torch.no_grad()
def code_statistics(model: nn.Module, layout: list[list]) -> torch.Tensor:
    """Replace every running mean/var by its 8-bit coded value (in the model) and return the codes."""
    state = model.state_dict()
    codes = []
    for row in layout:
        key, rule = row[0], row[3]
        if rule[0] != "bn_stat":
            continue
        value = state[key].float()
        if key.endswith("running_mean"):
            scale = float(value.abs().max()) / 127 or 1.0
            code = (value / scale).round().clamp(-127, 127)
            row[3] = ["bn_mean", scale]
        else:
            code = (8 * torch.log2(value.clamp_min(1e-12))).round().clamp(-128, 127)
            row[3] = ["bn_var"]
        codes.append(code.to(torch.int8).flatten())
    all_codes = torch.cat(codes) if codes else torch.zeros(0, dtype=torch.int8)
    fixture = {"layout": layout, "codes": all_codes, "seed": SEED}
    model.load_state_dict(build_state_dict(fixture))  # the coded statistics are what the model runs with
    return all_codes


def cumulative_bn(model: nn.Module) -> None:
    """Exact averages over the statistics batches (``momentum=None``). US-Net's BN passes its own
    momentum to its per-width statistics: 1.0 there, i.e. the last batch's statistics."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None
        elif isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0


def set_width(model: nn.Module, width: float) -> None:
    model.apply(lambda m: setattr(m, "width_mult", width))


def stat_batch(resolution: int, k: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(SEED * 7 + resolution * 100 + k)
    return torch.randn(STAT_BATCH_SIZE, 3, resolution, resolution, generator=gen)


# -------------------------------------------------------------------------------- per repo
@torch.no_grad()
def run_parallel(model: nn.Module, fx: Fixture, layout: list[list], inputs: dict) -> dict:
    """RS-Nets / SAN: a list input (one tensor per private BN set), a list of logits out."""
    model.train()
    for k in range(STAT_BATCHES):
        model([stat_batch(r, k) for r in fx.resolutions])
    codes = code_statistics(model, layout)
    model.eval()
    logits = model([official_input({"inputs": inputs}, r) for r in fx.resolutions])
    out = {"codes": codes, "logits": torch.stack(logits).float(), "configs": [[r, 1.0] for r in fx.resolutions]}
    if hasattr(model, "alpha"):  # the official validation's ensemble: sum_j softmax(alpha)_j * logits_j
        weights = torch.softmax(model.alpha, 0)
        out["ensemble"] = sum(w * z for w, z in zip(weights, logits)).float()
    return out


@torch.no_grad()
def run_slimmable(model: nn.Module, fx: Fixture, layout: list[list], inputs: dict) -> dict:
    """US-Nets / MutualNet / S-Nets: the width is a module attribute; each width's statistics are
    measured at the first (largest) resolution, as their post-statistics are."""
    model.train()
    for w in fx.widths:
        set_width(model, w)
        for k in range(STAT_BATCHES):
            model(stat_batch(fx.resolutions[0], k))
    codes = code_statistics(model, layout)
    model.eval()
    configs, logits = [], []
    for r in fx.resolutions:
        for w in fx.widths:
            set_width(model, w)
            logits.append(model(official_input({"inputs": inputs}, r)))
            configs.append([r, w])
    return {"codes": codes, "logits": torch.stack(logits).float(), "configs": configs}


@torch.no_grad()
def run_plain(model: nn.Module, fx: Fixture, layout: list[list], inputs: dict) -> dict:
    model.train()
    for k in range(STAT_BATCHES):
        model(stat_batch(fx.resolutions[0], k))
    codes = code_statistics(model, layout)
    model.eval()
    logits = [model(official_input({"inputs": inputs}, r)) for r in fx.resolutions]
    return {"codes": codes, "logits": torch.stack(logits).float(), "configs": [[r, 1.0] for r in fx.resolutions]}


def build_model(fx: Fixture, roots: dict[str, Path]) -> nn.Module:
    if fx.repo == "torchvision":
        module = importlib.import_module(fx.module)
    else:
        root = roots[fx.repo] / "non-quantization" if fx.repo == "rsnets" else roots[fx.repo]
        module = import_official(root, fx.module, fx.flags)
    model = getattr(module, fx.factory)(**fx.kwargs)
    if fx.repo == "rsnets":  # imagenet.py registers the ensemble weights on the model
        model.register_parameter("alpha", nn.Parameter(torch.ones(fx.kwargs["num_parallel"])))
    return model


def generate(fx: Fixture, roots: dict[str, Path], out_dir: Path) -> dict:
    torch.manual_seed(0)
    with cpu_cuda():
        model = build_model(fx, roots)
        layout = layout_of(model)
        fill_parameters(model, layout)
        cumulative_bn(model)
        inputs = {"seed": SEED, "batch": LOGIT_BATCH}
        run = {"rsnets": run_parallel, "san": run_parallel, "torchvision": run_plain}.get(fx.repo, run_slimmable)
        result = run(model, fx, layout, inputs)
    if fx.repo == "torchvision":
        source = {"repository": "torchvision", "version": importlib.import_module("torchvision").__version__}
    else:
        repo = {"rsnets": "yikaiw/RS-Nets", "san": "d-li14/SAN", "mutualnet": "taoyang1122/MutualNet",
                "slimmable": "JiahuiYu/slimmable_networks"}[fx.repo]
        source = {"repository": repo, "commit": commit_of(roots[fx.repo])}
    spec = {
        "name": fx.name,
        "source": {**source, "module": fx.module, "factory": fx.factory, "kwargs": fx.kwargs, "flags": fx.flags},
        "convert": {**fx.convert, "num_classes": NUM_CLASSES},
        "wrap": fx.wrap,
        "seed": SEED,
        "inputs": inputs,
        "configs": result["configs"],
        "layout": layout,
    }
    tensors = {"codes": result["codes"], "logits": result["logits"]}
    if "ensemble" in result:
        tensors["ensemble"] = result["ensemble"]
    save_fixture(spec, tensors, out_dir)
    biggest = float(result["logits"].abs().max())
    print(f"{fx.name}: {len(layout)} tensors, {result['codes'].numel()} statistic codes, "
          f"{len(result['configs'])} configurations, max |logit| {biggest:.3g}", flush=True)
    return spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for repo in ("rsnets", "san", "mutualnet", "slimmable"):
        parser.add_argument(f"--{repo}", type=Path, help=f"path of the {repo} repository checkout")
    parser.add_argument("--out", type=Path, default=FIXTURE_DIR)
    parser.add_argument("--only", nargs="*", help="fixture names to (re)generate")
    args = parser.parse_args(argv)
    roots = {k: getattr(args, k) for k in ("rsnets", "san", "mutualnet", "slimmable") if getattr(args, k)}
    torch.set_num_threads(1)
    for fx in fixtures():
        if args.only and fx.name not in args.only:
            continue
        if fx.repo != "torchvision" and fx.repo not in roots:
            print(f"{fx.name}: skipped (no --{fx.repo} path)", flush=True)
            continue
        generate(fx, roots, args.out)


if __name__ == "__main__":
    main()
