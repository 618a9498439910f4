"""``python -m resnet_switch.bench TASK [key=value ...]`` (tasks: :mod:`resnet_switch.bench`)."""

import sys

from ..cli.options import run_tool
from . import main

run_tool(main, sys.argv[1:])
