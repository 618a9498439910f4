"""``python -m resnet_switch.convert src=FILE format=... model=... [...]`` (options: :mod:`resnet_switch.convert`)."""

from __future__ import annotations

import sys
from typing import Any

from ..cli.config_defaults import config_defaults
from ..cli.options import parse_options, run_tool
from . import DEFAULTS, convert


def hydra_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def fine_tune_overrides(result: dict[str, Any]) -> list[str]:
    """The ``train`` overrides that rebuild exactly this network (arguments that differ from the
    method and model configs)."""
    out = [f"method={result['method']}", f"model={result['model']}", "data=imagefolder", "data.root=IMAGENET",
           f"data.resolutions={hydra_value(result['resolutions'])}"]
    method_defaults = config_defaults("method", result["method"])
    out += [f"method.{k}={hydra_value(v)}" for k, v in result["method_kwargs"].items()
            if k in method_defaults and method_defaults[k] != v]
    model_defaults = config_defaults("model", result["model"])
    out += [f"model.{k}={hydra_value(v)}" for k, v in result["model_cfg"].items()
            if k in model_defaults and model_defaults[k] != v and k != "name"]
    if result["normalize"] == "none":
        out += ["data.mean=[0,0,0]", "data.std=[1,1,1]"]
    return out + [f"data.protocol={result['protocol']}", f"ckpt_path={result['out']}"]


def report(result: dict[str, Any]) -> str:
    widths = "" if result["widths"] == [1.0] else f", widths {result['widths']}"
    return "\n".join([
        f"convert: {result['format']} {result['model']} from {result['src']}: {result['tensors']} tensors checked, "
        f"{result['copied']} copied, {result['dropped']} unused by the official model dropped",
        f"wrote {result['out']} (method={result['method']}, resolutions {result['resolutions']}{widths}, "
        f"{result['num_classes']} classes; data protocol {result['protocol']}, normalisation {result['normalize']})",
        f"evaluate: python -m resnet_switch.evaluate ckpt={result['out']} +data.root=IMAGENET",
        "fine-tune: python -m resnet_switch.train " + " ".join(fine_tune_overrides(result)),
    ])


def main(argv: list[str]) -> dict[str, Any]:
    opts, _ = parse_options(DEFAULTS, argv, renamed={"width_mult": "model.width_mult"})
    result = convert(opts)
    print(report(result), flush=True)
    return result


if __name__ == "__main__":
    run_tool(main, sys.argv[1:])
