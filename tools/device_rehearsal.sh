#!/usr/bin/env bash
# make device-rehearsal: the lent GPU machine's start, rehearsed here without a package index.
#   1. an "image" venv ($REHEARSAL_IMAGE, default /tmp/rs-image; built once, from the index): the
#      image's packages (tools/device_image.txt: torch, torchvision, lightning, ...), NOT hydra;
#   2. the bundle for this machine's CPython (.device/wheels when that is 3.12, else the same list
#      for this version in /tmp/rs-wheels-cpXY: tools/device_bundle.sh with DEVICE_PYTHON_VERSION);
#   3. the tree that travels (tracked files + that bundle as .device/wheels) copied to a temp folder;
#   4. there, with pip cut off from every index (PIP_NO_INDEX, no config file): `bash
#      tools/gpu_check.sh` builds its venv over the image from the bundle alone and must print its
#      CPU skip line; that venv then imports every module of resnet_switch.
#   5. with REHEARSAL_PYTEST set (e.g. "-n 2"): the fast test suite in that venv, i.e. on the image's
#      torch / torchvision / lightning versions (what the GPU machine's `pytest` would run, less CUDA).
# Prints the size of the travelling tree (tracked files + .device/) at the end; exit 0 = rehearsal passed.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${REHEARSAL_IMAGE:-/tmp/rs-image}"
BASE_PY="${PY:-python3}"
VER=$("$BASE_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

if [ ! -x "$IMAGE/bin/python" ] || ! "$IMAGE/bin/python" -c "import torch, lightning" 2>/dev/null; then
    echo "rehearsal: building the image venv $IMAGE (once, from the index)"
    rm -rf "$IMAGE"
    "$BASE_PY" -m venv "$IMAGE"
    "$IMAGE/bin/pip" install -q $(sed -E 's/#.*//' tools/device_image.txt) 2>&1 | grep -v "is ignored" || true
fi
"$IMAGE/bin/python" -c "import hydra" 2>/dev/null && { echo "error: $IMAGE holds hydra: not the image" >&2; exit 1; }

if [ "$VER" = 3.12 ]; then
    WHEELS=.device/wheels
    PY="$BASE_PY" bash tools/device_bundle.sh
else
    WHEELS="/tmp/rs-wheels-cp${VER/./}"
    echo "rehearsal: this machine's python is $VER, the image's 3.12: the same list as cp${VER/./} wheels in $WHEELS"
    DEVICE_PYTHON_VERSION="$VER" DEVICE_WHEELS="$WHEELS" PY="$BASE_PY" bash tools/device_bundle.sh
fi

TREE=$(mktemp -d /tmp/rs-tree.XXXXXX)
trap 'rm -rf "$TREE" /tmp/rs-rehearsal-venv' EXIT
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$TREE"  # symlinks (conf/) kept
mkdir -p "$TREE/.device/wheels" && cp "$WHEELS"/*.whl "$TREE/.device/wheels/"
echo "rehearsal: tree copied to $TREE ($(git ls-files | wc -l) files + $(ls "$WHEELS" | wc -l) wheels)"

cd "$TREE"
log=$(mktemp)
env -u PY PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_FIND_LINKS= GPU_CHECK_BASE="$IMAGE/bin/python" \
    GPU_CHECK_VENV=/tmp/rs-rehearsal-venv CUDA_VISIBLE_DEVICES= bash tools/gpu_check.sh 2>&1 | tee "$log"
grep -q "gpu-check: no CUDA device, skipped" "$log" || { echo "error: no skip line from gpu_check.sh" >&2; exit 1; }
/tmp/rs-rehearsal-venv/bin/python - <<'EOF'
import importlib, pkgutil, resnet_switch, torch, hydra
names = [m.name for m in pkgutil.walk_packages(resnet_switch.__path__, "resnet_switch.")
         if not m.name.endswith(".__main__")]  # a package's command line runs on import
for name in names:
    importlib.import_module(name)
import sys
for module in ("hydra", "omegaconf", "antlr4", "torchcodec", "pycocotools"):  # the bundle's, not a site folder's
    where = importlib.import_module(module).__file__
    assert where.startswith(sys.prefix), f"{module} imports from {where}, not from the bundle in {sys.prefix}"
print(f"rehearsal: {len(names)} modules of resnet_switch import (torch {torch.__version__}, hydra {hydra.__version__}, "
      f"from {resnet_switch.__file__.rsplit('/src/', 1)[0]})")
EOF
if [ -n "${REHEARSAL_PYTEST:-}" ]; then
    echo "rehearsal: the fast suite on $(/tmp/rs-rehearsal-venv/bin/python -c 'import torch, torchvision, lightning; print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, lightning {lightning.__version__}")')"
    WANDB_MODE=offline /tmp/rs-rehearsal-venv/bin/python -m pytest -q -p no:cacheprovider $REHEARSAL_PYTEST
fi
cd - >/dev/null
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
bundle=$(du -sb .device 2>/dev/null | cut -f1 || echo 0)
echo "rehearsal passed; the tree that travels: tracked files $((tracked / 1048576)) MiB + .device $((bundle / 1048576)) MiB = $(((tracked + bundle) / 1048576)) MiB (limit 60)"
