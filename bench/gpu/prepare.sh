#!/usr/bin/env bash
# Fetch here (PyPI) the wheels the bare GPU machine lacks into an ignored folder that travels
# with the GPU run (the device tool's `carry`), and check them: CPython 3.12 manylinux x86-64 or
# pure-Python wheels, one version each, every requirement covered, <= 64 MiB in all.
# bench/gpu/wheels.py says which wheels and why; DEVELOPERS.md ("GPU runs") how to use them.
#
#   bash bench/gpu/prepare.sh [DIR]     DIR default: $MMENGINE_GPU_WHEELS or .gpu-wheels
#   PYTHON=...                          interpreter running pip (default .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEST=${1:-${MMENGINE_GPU_WHEELS:-.gpu-wheels}}
# the machine's interpreter and platform: pip picks wheels for it, never for this one
TARGET=(--only-binary=:all: --no-deps --python-version 3.12 --implementation cp
        --abi cp312 --abi abi3 --abi none)
for n in $(seq 28 -1 17); do TARGET+=(--platform "manylinux_2_${n}_x86_64"); done
TARGET+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)

rm -rf "$DEST"
mkdir -p "$DEST"
mapfile -t want < <("$PYTHON" bench/gpu/wheels.py needed)
for round in 1 2 3 4 5 6; do
    [ "${#want[@]}" -eq 0 ] && break
    echo "prepare: round $round: ${want[*]}"
    if ! "$PYTHON" -m pip download -q --disable-pip-version-check "${TARGET[@]}" \
            -d "$DEST" "${want[@]}"; then
        echo "prepare: pip found no CPython 3.12 manylinux x86-64 (or pure-Python) wheel for" \
             "one of: ${want[*]}" >&2
        exit 1
    fi
    mapfile -t want < <("$PYTHON" bench/gpu/wheels.py missing "$DEST")
done
if [ "${#want[@]}" -ne 0 ]; then
    echo "prepare: requirements still missing after $round rounds: ${want[*]}" >&2
    exit 1
fi
"$PYTHON" bench/gpu/wheels.py check "$DEST" --json "$DEST/manifest.json"
tree=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null \
       | awk '{s += $1} END {print s + 0}')
wheels=$(du -cb "$DEST"/*.whl | tail -n 1 | cut -f 1)
total=$(( tree + wheels ))
echo "prepare: $DEST holds $(ls "$DEST"/*.whl | wc -l) wheels," \
     "$(awk -v b="$wheels" 'BEGIN {printf "%.2f", b / 1048576}') MiB;" \
     "with the working tree $(awk -v b="$total" 'BEGIN {printf "%.2f", b / 1048576}') MiB" \
     "travel (limit 64 MiB)"
if [ "$total" -gt $(( 64 * 1024 * 1024 )) ]; then
    echo "prepare: over the 64 MiB a GPU run can carry" >&2
    exit 1
fi
echo "prepare: ok; carry it with the run: carry [\"$DEST\"]"
