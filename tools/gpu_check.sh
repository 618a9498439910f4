#!/usr/bin/env bash
# make gpu-check: every CUDA path of resnet_switch (tests, training per method/precision/format,
# DDP with NCCL, loader with GPU JPEG decode, CUDA memory, train-step speed) in ~8 minutes on one GPU.
# One JSON line per check, then a summary table (docs/benchmarks.md "GPU check"). Without a CUDA
# device it prints "gpu-check: no CUDA device, skipped" and exits 0. Options: key=value, e.g.
# parts=[tests,train] budget_s=600 (default 480: no check starts after it).
#
# The interpreter: $PY when set (make gpu-check: .venv/bin/python), else .venv/bin/python or
# python3 when they import the project and hydra, else, on a machine with no package index (the
# lent GPU machines) and a .device/wheels that travelled with the tree (make device-bundle), a venv
# at $GPU_CHECK_VENV (/tmp/rs-venv) over $GPU_CHECK_BASE (python3, whose CUDA torch it uses): the
# bundle installed with pip --no-index, this project with --no-deps; kept for a rerun while the
# bundle and pyproject.toml are unchanged. With $OUT set: $OUT/gpu_check.log (everything printed),
# $OUT/gpu_check.jsonl (the JSON lines), $OUT/gpu_check_summary.md (the table).
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE="${WANDB_MODE:-offline}" PYTHONUNBUFFERED=1
WHEELS=.device/wheels
VENV="${GPU_CHECK_VENV:-/tmp/rs-venv}"
BASE="${GPU_CHECK_BASE:-python3}"

imports_project() { "$1" -c "import hydra, resnet_switch.gpu_check" >/dev/null 2>&1; }

fail() { echo "error: $*" >&2; return 1; }

device_venv() {  # build (or reuse) $VENV; its python on stdout, the rest on stderr. Every step is
    # checked explicitly: errexit does not reach into $(...) nor the pipeline of the $OUT case
    local want py site
    want="$(ls "$WHEELS") $(cksum <pyproject.toml) $(cksum <tools/device_bundle.txt) $PWD"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.gpu_check_stamp" 2>/dev/null)" = "$want" ]; then
        echo "gpu-check: reusing $VENV" >&2
        echo "$VENV/bin/python"
        return
    fi
    echo "gpu-check: building $VENV over $(command -v "$BASE") from $WHEELS (offline)" >&2
    rm -rf "$VENV"
    "$BASE" -m venv --without-pip --system-site-packages "$VENV" >&2 || fail "$BASE -m venv $VENV failed" || return
    py="$VENV/bin/python"
    # the image's python3 may itself be a venv (torch in its own site-packages, which
    # --system-site-packages does not reach): its site folders follow ours, .pth files included
    site=$("$py" -c "import sysconfig; print(sysconfig.get_path('purelib'))") || fail "$py does not start" || return
    "$BASE" -c "
import sys
for p in sys.path:
    if p.endswith(('site-packages', 'dist-packages')):
        print(f'import site; site.addsitedir({p!r})')" >"$site/_gpu_check_image_site.pth" || fail "no site folders" || return
    "$py" -m pip --version >/dev/null 2>&1 || fail "$BASE has no pip module" || return
    local reqs=() req
    while read -r req; do reqs+=("$req"); done < <(sed -E 's/#.*//; s/[[:space:]]+//g' tools/device_bundle.txt | grep -v '^$')
    local setuptools=() others=()
    for req in "${reqs[@]}"; do
        if [[ "$req" == setuptools==* ]]; then setuptools+=("$req"); else others+=("$req"); fi
    done
    local pip=("$py" -m pip install -q --no-index --find-links "$WHEELS" --no-warn-script-location --disable-pip-version-check)
    # an editable install without build isolation needs setuptools >= 70.1 (>= 64: editable wheels,
    # >= 70.1: bdist_wheel built in, no `wheel` package); the image's when it is that new, else the bundle's
    if ((${#setuptools[@]})) && ! "$py" -c "import setuptools, sys; v = tuple(int(p) for p in setuptools.__version__.split('.')[:2]); sys.exit(v < (70, 1))" \
            2>/dev/null; then
        "${pip[@]}" --no-deps "${setuptools[@]}" >&2 || fail "installing ${setuptools[*]} failed" || return
    fi
    "${pip[@]}" "${others[@]}" >&2 || fail "pip install --no-index from $WHEELS failed (make device-bundle again?)" || return
    "${pip[@]}" --no-deps --no-build-isolation -e . >&2 || fail "installing this project into $VENV failed" || return
    imports_project "$py" || fail "$py cannot import hydra and resnet_switch.gpu_check" || return
    echo "$want" >"$VENV/.gpu_check_stamp"
    echo "$py"
}

pick_python() {
    if [ -n "${PY:-}" ]; then echo "$PY"; return; fi
    if [ -x .venv/bin/python ] && imports_project .venv/bin/python; then echo .venv/bin/python; return; fi
    if imports_project "$BASE"; then echo "$BASE"; return; fi
    if [ -d "$WHEELS" ]; then device_venv; return; fi  # its status is the function's
    echo "error: $BASE cannot import hydra and resnet_switch, and there is no $WHEELS: run 'make install'," \
         "or 'make device-bundle' where pip reaches an index and carry .device with the tree" >&2
    exit 2
}

run() {
    local py
    py=$(pick_python) || exit $?
    local outputs=()
    [ -n "${OUT:-}" ] && outputs=("out=$OUT/gpu_check.jsonl" "summary=$OUT/gpu_check_summary.md")
    "$py" -m resnet_switch.gpu_check "${outputs[@]}" "$@"  # later options win: the caller's out= too
}

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    set +e
    run "$@" 2>&1 | tee "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
run "$@"
