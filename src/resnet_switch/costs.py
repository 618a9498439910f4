"""``python -m resnet_switch.costs model=NAME [resolutions=[...]] [widths=[...]] [format=md|csv]``:
MAdds, parameters, model size in bits and bit-operations (BOPs) per configuration
(:func:`resnet_switch.evaluation.costs.cost_table`; the bit-counting rule is in that module).

::

    python -m resnet_switch.costs model=resnet18 resolutions=[224,192,160,128,96] \
        [widths=[1.0,0.75]] [num_classes=1000] [in_channels=3] [format=md|csv] \
        [quant=lq quant.weight_bits=2 quant.act_bits=2]
    python -m resnet_switch.costs model=torchvision model.arch=efficientnet_b0 resolutions=[224]

The network is the one ``train`` builds for ``model=NAME``: the entries of ``conf/model/NAME.yaml``
(``model.small_input: auto`` decided by the largest of ``resolutions``), with ``model.arch``,
``model.kwargs`` and ``model.small_input`` given here taking their place. The quantizer settings are
spelled as in ``train`` (``quant.weight_bits``); the retired ``weight_bits=`` and ``act_bits=`` are
refused with a hint.
"""

from __future__ import annotations

import sys

from .cli.config_defaults import config_defaults
from .cli.options import QUANT_RENAMED, check_choice, parse_options, run_tool
from .errors import ConfigError
from .evaluation.costs import cost_table, human
from .layers.quant import QUANTIZERS, quant_spec_from_config
from .models import BACKBONES, ModelConfig

DEFAULTS = {
    "model": None,  # required: a backbone name
    "resolutions": [224, 192, 160, 128, 96],
    "widths": [1.0],
    "num_classes": 1000,
    "in_channels": 3,
    "format": "md",
    # null: the model config's value (conf/model/NAME.yaml)
    "model.arch": None,  # model=torchvision|timm: the architecture (torchvision.models / timm name)
    "model.kwargs": None,  # model=torchvision|timm: extra constructor arguments
    "model.small_input": None,  # auto | true | false: the stem (auto: small-input at <= 64 px)
    "quant": "none",  # a registered quantizer: none | lq
    "quant.weight_bits": 2,  # quant=lq: 1..4, 32 = float weights
    "quant.act_bits": 2,  # quant=lq: 1..4, 32 = float activations
}
FORMATS = ("md", "csv")
CSV_COLUMNS = ("resolution", "width", "madds", "params", "size_bits", "bops")


def format_csv(rows: list[dict]) -> str:
    lines = [",".join(CSV_COLUMNS)]
    lines += [",".join(str(row[c]) for c in CSV_COLUMNS) for row in rows]
    return "\n".join(lines)


def format_markdown(rows: list[dict]) -> str:
    lines = ["| resolution | width | MAdds | params | size (bits) | BOPs |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['resolution']} | {row['width']} | {human(row['madds'])} | {human(row['params'])} "
              f"| {human(row['size_bits'])} | {human(row['bops'])} |" for row in rows]
    return "\n".join(lines)


def model_arguments(opts: dict) -> dict:
    """The backbone's constructor arguments as ``train model=NAME`` gives them: the model config's
    entries, with the ``model.*`` options given here in their place (one line for an option the
    model config does not have)."""
    name = opts["model"]
    model_cfg = config_defaults("model", name)
    for key in (k.removeprefix("model.") for k in DEFAULTS if k.startswith("model.")):
        if opts[f"model.{key}"] is None:
            continue
        if key not in model_cfg:
            raise ConfigError(f"model.{key}: not an option of model={name} (conf/model/{name}.yaml); drop it")
        model_cfg[key] = opts[f"model.{key}"]
    return ModelConfig.from_config({**model_cfg, "name": name}).backbone


def main(argv: list[str]) -> None:
    opts, _ = parse_options(DEFAULTS, argv, renamed=QUANT_RENAMED)
    if opts["model"] is None:
        raise ConfigError(f"model: required; choose one of {BACKBONES.list()}, e.g. model=resnet18")
    check_choice("model", opts["model"], BACKBONES.list())
    check_choice("format", opts["format"], FORMATS)
    for key in ("num_classes", "in_channels"):
        if opts[key] < 1:
            raise ConfigError(f"{key}: must be a positive integer, got {opts[key]}")
    check_choice("quant", opts["quant"], QUANTIZERS.list())
    quant = quant_spec_from_config({"name": opts["quant"], "weight_bits": opts["quant.weight_bits"],
                                    "act_bits": opts["quant.act_bits"]})
    rows = cost_table(opts["model"], opts["resolutions"], opts["widths"], opts["num_classes"],
                      opts["in_channels"], quant=quant, **model_arguments(opts))
    print(format_csv(rows) if opts["format"] == "csv" else format_markdown(rows))


if __name__ == "__main__":
    run_tool(main, sys.argv[1:])
