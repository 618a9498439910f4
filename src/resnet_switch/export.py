"""``python -m resnet_switch.export ckpt=PATH resolution=R [width=W] format=torchscript|onnx|state_dict
[fold_bn=true] [out=PATH]``: one configuration as a plain, verified model file;
``python -m resnet_switch.export ckpt=PATH format=onnx configs=all [out=FILE]``: ONE verified ONNX file
for every resolution (:mod:`resnet_switch.deploy.one_file`); ``format=pte configs=all``: the same as ONE
verified ExecuTorch program (:mod:`resnet_switch.deploy.pte`, needs ``pip install 'resnet_switch[executorch]'``).

The work is :func:`resnet_switch.deploy.export.export`; options are its ``DEFAULTS``. Exit codes: 0
written and verified, 1 the check failed (no file left), 2 a bad option (one line).
"""

from __future__ import annotations

import sys
from typing import Any

from .cli.options import parse_options, run_tool
from .deploy.export import DEFAULTS, EXIT_VERIFY_FAILED, VerifyError, export, report


def main(argv: list[str]) -> dict[str, Any]:
    opts, _ = parse_options(DEFAULTS, argv)
    try:
        result = export(opts)
    except VerifyError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_VERIFY_FAILED) from None
    print(report(result), flush=True)
    return result


if __name__ == "__main__":
    run_tool(main, sys.argv[1:])
