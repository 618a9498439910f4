#!/usr/bin/env bash
# make device-bundle: the wheels that `bash tools/gpu_check.sh` installs offline on a GPU machine
# (tools/device_bundle.txt: one name==version a line), for CPython 3.12, manylinux x86_64, into
# .device/wheels (git-ignored; it travels with the tree: carry [".device"]). Idempotent: a wheel
# already there is kept, other versions of a listed name and names no longer listed are removed.
# A name with no such wheel on the index is built here from its source archive (pip wheel
# --no-deps) and must come out pure Python (py3-none-any). Prints what it wrote.
# Environment: PY (the pip that downloads, default python3), DEVICE_PYTHON_VERSION (default 3.12),
# DEVICE_WHEELS (default .device/wheels; e.g. a cp311 variant for a local rehearsal).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
PYVER="${DEVICE_PYTHON_VERSION:-3.12}"
DEST="${DEVICE_WHEELS:-.device/wheels}"
LIST=tools/device_bundle.txt
ABI="cp${PYVER/./}"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
shopt -s nocaseglob nullglob

norm() { echo "$1" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/_/g'; }  # a wheel file's name part
mapfile -t REQS < <(sed -E 's/#.*//; s/[[:space:]]+//g' "$LIST" | grep -v '^$')
mkdir -p "$DEST"
listed=" "
for req in "${REQS[@]}"; do
    [[ "$req" == *==* ]] || { echo "error: $LIST: '$req' must be name==version" >&2; exit 2; }
    listed+="$(norm "${req%%==*}") "
done

for wheel in "$DEST"/*.whl; do  # names no longer listed
    file=$(basename "$wheel")
    if [[ "$listed" != *" $(norm "${file%%-*}") "* ]]; then rm -f "$wheel"; echo "removed $file (not in $LIST)"; fi
done

written=()
kept=0
for req in "${REQS[@]}"; do
    name=${req%%==*}
    version=${req#*==}
    stem="$(norm "$name")-$version-"
    for wheel in "$DEST/$(norm "$name")"-*.whl; do  # another version: two of one name stop pip
        file=$(basename "$wheel")
        [[ "${file,,}" == "${stem,,}"* ]] || { rm -f "$wheel"; echo "removed $file (not $req)"; }
    done
    have=("$DEST/$stem"*.whl)
    if ((${#have[@]})); then kept=$((kept + 1)); continue; fi
    log=$(mktemp)
    if "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
            --abi "$ABI" --abi abi3 --abi none "${PLATFORMS[@]}" -d "$DEST" "$req" >"$log" 2>&1; then
        :
    elif grep -q "No matching distribution" "$log"; then  # a source archive only: build it here
        build=$(mktemp -d)
        "$PY" -m pip wheel -q --no-deps --no-binary "$name" -w "$build" "$req" >"$log" 2>&1 || {
            grep -v "is ignored" "$log" >&2; echo "error: pip wheel $req failed" >&2; exit 1; }
        built=("$build"/*.whl)
        if ((${#built[@]} != 1)) || [[ "$(basename "${built[0]}")" != *-none-any.whl ]]; then
            echo "error: $req: no $ABI manylinux wheel on the index and its build is not pure Python:" \
                 "$(basename "${built[@]:-none}")" >&2
            exit 1
        fi
        mv "${built[0]}" "$DEST/"
        rm -rf "$build"
    else
        grep -v "is ignored" "$log" >&2 || true
        echo "error: pip download $req failed (network? the name and version in $LIST?)" >&2
        exit 1
    fi
    rm -f "$log"
    new=("$DEST/$stem"*.whl)
    written+=("$(basename "${new[0]}")")
done

for file in "${written[@]}"; do echo "wrote $DEST/$file"; done
echo "device-bundle: ${#written[@]} written, $kept already there, $(du -sh "$DEST" | cut -f1) in $DEST ($ABI manylinux x86_64)"
