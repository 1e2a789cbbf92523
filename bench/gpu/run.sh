#!/usr/bin/env bash
# The GPU run, in one command of at most 8 minutes on a bare GPU machine (DEVELOPERS.md, "GPU
# runs"): install the carried wheels offline (bench/gpu/prepare.sh fetched them), build
# mmengine._C with the CUDA kernels for this GPU's architecture, run every `gpu` test with
# MMENGINE_REQUIRE_GPU=1 (what cannot exist there, DALI and TensorRT, skips with its reason;
# any other skip fails the run), then the GPU benchmarks: the Triton and CUDA persistent LSTMs
# against cuDNN (batch 1, 8, 64, 256; fp32 and bf16; the standard shape and the default
# model's) and the engine end to end on torch/cuda/triton with the torch front end on the GPU.
# Writes $OUT/run.log, $OUT/summary.json and the raw results (at most 8 files).
#
#   bash bench/gpu/run.sh             on the GPU machine, from the repository root
#   bash bench/gpu/run.sh --dry-run   here, on the CPU: check the wheels (or, without them, their
#                                     listing), build without CUDA (or reuse an up-to-date
#                                     build), collect the gpu tests, import and smoke-test the
#                                     benchmarks; under 3 minutes on 2 cores
#
# Environment: OUT (default /tmp/mmengine-gpu-<time>), PYTHON (default python3; .venv's in a
# dry run), MMENGINE_GPU_WHEELS (default .gpu-wheels), MMENGINE_GPU_BUDGET_S (total seconds of
# the steps, default 450 on a GPU, 170 in a dry run), MMENGINE_CUDA_ARCH (e.g. 90; default: the
# GPU's compute capability from nvidia-smi, else torch).
set -euo pipefail

SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

# ------------------------------------------------------------------------------ the steps
# Each step runs as `bash run.sh --step NAME` under `timeout`; it reads the exported settings.
step_env() {
    "$PYTHON" - <<'EOF'
import json, os, platform, shutil, subprocess, sys

def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None

info = {"python": platform.python_version(), "executable": sys.executable,
        "cpus": os.cpu_count(), "arch_requested": os.environ.get("ARCH") or None,
        "nvcc": (run("nvcc", "--version") or "").splitlines()[-1:] or None,
        "cmake": (run(os.environ["CMAKE"], "--version") or "").splitlines()[:1] or None,
        "git_commit": run("git", "rev-parse", "HEAD") or None}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        info["gpu"] = torch.cuda.get_device_name()
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        info["cudnn"] = torch.backends.cudnn.version()
except ImportError as exc:
    info["torch"] = f"not importable: {exc}"
for mod in ("triton", "onnxruntime", "numpy", "pybind11"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
        info[mod] = f"not importable: {type(exc).__name__}"
if shutil.which("nvidia-smi"):
    info["nvidia_smi"] = run("nvidia-smi", "--query-gpu=name,compute_cap,driver_version,"
                             "memory.total", "--format=csv,noheader")
print(json.dumps(info, indent=1))
with open(os.path.join(os.environ["STATE"], "env.json"), "w") as f:
    json.dump(info, f, indent=1)
EOF
}

step_wheels() {
    if [ "$MODE" = dry-run ]; then
        if compgen -G "$WHEELS/*.whl" > /dev/null; then
            "$PYTHON" bench/gpu/wheels.py check "$WHEELS" --json "$STATE/wheels.json"
        else
            echo "no wheels in $WHEELS (bash bench/gpu/prepare.sh fetches them): checking the listing"
            "$PYTHON" bench/gpu/wheels.py plan --json "$STATE/wheels.json"
        fi
        return
    fi
    if ! compgen -G "$WHEELS/*.whl" > /dev/null; then
        echo "no wheels in $WHEELS: run bash bench/gpu/prepare.sh on the CPU machine and carry" \
             "$WHEELS with this run" >&2
        return 1
    fi
    [ -f "$WHEELS/manifest.json" ] && cp "$WHEELS/manifest.json" "$STATE/wheels.json"
    # into the interpreter's environment, resolving against what the machine has; where that
    # is not writable, into a folder of our own put on PYTHONPATH
    if ! "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --no-cache-dir \
            --disable-pip-version-check "$WHEELS"/*.whl; then
        echo "pip could not install into $("$PYTHON" -c 'import sys; print(sys.prefix)');" \
             "installing into $STATE/site instead"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-cache-dir \
            --disable-pip-version-check --target "$STATE/site" "$WHEELS"/*.whl
        echo "$STATE/site" > "$STATE/pythonpath"
        export PYTHONPATH="$STATE/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$PYTHON" - <<'EOF'
import importlib
from importlib.metadata import version

names = ("soundfile", "soxr", "mido", "pretty_midi")
mods = {n: importlib.import_module(n) for n in names}
print("importable:", ", ".join(f"{n} {version(n)}" for n in names),
      f"(libsndfile {mods['soundfile'].__libsndfile_version__})")
EOF
}

# configure mmengine._C's CMake build (the standalone path of CMakeLists.txt, with the
# arguments setup.py passes): configure DIR CUDA(ON|OFF) LIBDIR [ARCH]
configure() {
    local dir=$1 cuda=$2 libdir=$3 arch=${4:-} gen=()
    local args=(-DCMAKE_BUILD_TYPE=Release "-DMMENGINE_WITH_CUDA=$cuda"
                "-DPython_EXECUTABLE=$(command -v "$PYTHON")"
                "-Dpybind11_DIR=$("$PYTHON" -m pybind11 --cmakedir)"
                "-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=$libdir")
    [ -n "$arch" ] && args+=("-DCMAKE_CUDA_ARCHITECTURES=$arch")
    [ -n "$NINJA" ] && gen=(-G Ninja "-DCMAKE_MAKE_PROGRAM=$NINJA")
    rm -rf "$dir"
    "$CMAKE" -S . -B "$dir" "${gen[@]}" "${args[@]}"
}

build_ext() {  # build_ext DIR CUDA LIBDIR [ARCH]: configure, then build with every core
    configure "$@" && "$CMAKE" --build "$1" --parallel "$(nproc)"
}

# the module built into LIBDIR imports and has (or lacks) its CUDA kernels: check_ext LIBDIR CUDA
check_ext() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import importlib.util, os, sys, sysconfig
libdir, cuda = sys.argv[1], sys.argv[2] == "ON"
path = os.path.join(libdir, "_C" + sysconfig.get_config_var("EXT_SUFFIX"))
spec = importlib.util.spec_from_file_location("mmengine._C", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
has = hasattr(mod, "lstm_sequence_cuda")
print(f"{path}: imports; CUDA kernels {'present' if has else 'absent'}")
sys.exit(0 if has == cuda else 1)
EOF
}

step_build() {
    local t0=$SECONDS
    if [ "$MODE" = gpu ]; then
        echo "building mmengine._C with CUDA for sm_$ARCH ($(nproc) jobs)"
        if build_ext build/gpu-cuda ON "$ROOT/mmengine/" "$ARCH" && check_ext mmengine ON; then
            printf '{"cuda": true, "arch": "%s", "seconds": %d}\n' "$ARCH" $((SECONDS - t0)) \
                > "$STATE/build.json"
            return 0
        fi
        echo "the CUDA build failed: building without CUDA so that the Triton and torch parts" \
             "can still run (the cuda backend's tests will fail)" >&2
        build_ext build/gpu-cpu OFF "$ROOT/mmengine/" && check_ext mmengine OFF || true
        printf '{"cuda": false, "arch": "%s", "fallback": "cpu", "seconds": %d}\n' "$ARCH" \
            $((SECONDS - t0)) > "$STATE/build.json"
        return 1
    fi
    # dry run: reuse the in-tree module when it is newer than every source it is built from
    # (`make install` built it with these same CMake settings); else build one aside
    local so newer
    so=mmengine/_C$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    newer=""
    [ -f "$so" ] && newer=$(find csrc CMakeLists.txt setup.py -newer "$so" -type f | head -n 3)
    if [ -f "$so" ] && [ -z "$newer" ] && check_ext mmengine OFF; then
        echo "reusing $so: built from the current sources, without CUDA"
        printf '{"cuda": false, "reused": "%s", "seconds": %d}\n' "$so" $((SECONDS - t0)) \
            > "$STATE/build.json"
    else
        echo "no up-to-date $so (${newer:-absent}): building without CUDA in build/gpu-dryrun"
        build_ext build/gpu-dryrun/tmp OFF "$ROOT/build/gpu-dryrun/lib"
        check_ext build/gpu-dryrun/lib OFF
        printf '{"cuda": false, "built": "build/gpu-dryrun/lib", "seconds": %d}\n' \
            $((SECONDS - t0)) > "$STATE/build.json"
    fi
    if command -v nvcc > /dev/null; then  # the GPU build's configure step, where nvcc exists
        echo "nvcc found: configuring the CUDA build (sm_90) to check its CMake step"
        if ! configure build/gpu-dryrun/cuda ON "$ROOT/build/gpu-dryrun/lib" 90 \
                > "$STATE/cuda-configure.log" 2>&1; then
            tail -n 30 "$STATE/cuda-configure.log"
            return 1
        fi
        tail -n 2 "$STATE/cuda-configure.log"
    fi
}

step_tests() {
    local files extra=()
    mapfile -t files < <("$PYTHON" bench/gpu/report.py gpu-files)
    if [ "$MODE" = dry-run ]; then
        "$PYTHON" -m pytest -q -p no:cacheprovider --collect-only -m gpu tests \
            > "$STATE/collect-all.txt" || { cat "$STATE/collect-all.txt"; return 1; }
        # what run.sh hands pytest on the GPU: those files alone, and what they import
        "$PYTHON" bench/gpu/report.py collect --all "$STATE/collect-all.txt" "${files[@]}" \
            --json "$STATE/collect.json" > "$STATE/collect.txt" || { cat "$STATE/collect.txt"; return 1; }
        tail -n 1 "$STATE/collect.txt"
        return
    fi
    "$PYTHON" -c 'import pytest_timeout' 2> /dev/null \
        && extra=(--timeout=150 --timeout-method=thread)  # a hung kernel must not eat the run
    # Triton compiles each kernel variant on the CPU: a few workers share the GPU meanwhile
    "$PYTHON" -c 'import xdist' 2> /dev/null && (( $(nproc) >= 8 )) \
        && extra+=(-n "$(( $(nproc) / 4 ))")
    MMENGINE_REQUIRE_GPU=1 "$PYTHON" -m pytest -v -rs -p no:cacheprovider -m gpu "${extra[@]}" \
        --junitxml="$OUT/pytest-gpu.xml" "${files[@]}"
}

step_bench_lstm_standard() {
    "$PYTHON" bench/bench_gpu_lstm.py --rounds 7 --json "$OUT/bench-lstm-standard.json" \
        --markdown "$STATE/lstm-standard.md"
}

step_bench_lstm_model() {
    "$PYTHON" bench/bench_gpu_lstm.py --model-shape --rounds 7 \
        --json "$OUT/bench-lstm-model.json" --markdown "$STATE/lstm-model.md"
}

step_bench_engine() {
    "$PYTHON" bench/bench_gpu_frontend.py --suite all --batches 1 8 64 --rounds 3 \
        --json "$OUT/bench-engine.json"
}

step_bench_check() {  # dry run: the benchmarks import, prepare their workloads, skip cleanly
    "$PYTHON" - <<'EOF'
import tempfile
from pathlib import Path

from bench import bench_gpu_frontend as fe, bench_gpu_lstm as lstm
from mmengine.runtime import Engine, ErrorEntry

print("bench_gpu_lstm --model-shape:", lstm.model_shape())
with tempfile.TemporaryDirectory() as tmp:
    paths = fe.make_audio(Path(tmp), 1, "flac")
    eng = Engine.load(fe.make_engine(Path(tmp)), backend="torch", frontend="torch",
                      frontend_device="cpu")
    res = eng.classify(paths, batch_size=1, workers=1)
    assert not any(isinstance(r, ErrorEntry) for r in res), res
    print(f"engine suite workload, on the CPU: {eng!r} -> {res[0].label}")
for args in (["--model-shape"], []):
    assert lstm.main(args + ["--json", "/dev/null", "--markdown", "/dev/null"]) == 0
assert fe.main(["--suite", "all"]) == 0

import sys
from bench.gpu.report import foreign_imports
foreign = foreign_imports(sys.modules)
assert not foreign, f"the benchmarks import what the GPU machine lacks: {foreign}"
print("benchmark imports: all on the GPU machine or carried")
EOF
}

# ------------------------------------------------------------------------------ the driver
record() {  # record NAME STATUS RC SECONDS LIMIT
    printf '{"name": "%s", "status": "%s", "rc": %d, "seconds": %d, "limit_s": %d}\n' \
        "$1" "$2" "$3" "$4" "$5" >> "$STATE/steps.jsonl"
}

# step NAME MAX_S MIN_S: run step NAME for at most MAX_S seconds, and not into the MIN_S the
# later steps are guaranteed (RESERVE[NAME]) unless that leaves it less than its own MIN_S;
# never past the deadline; record its outcome; never stops the run
step() {
    local name=$1 max=$2 min=$3 left remaining limit rc start status
    remaining=$(( DEADLINE - SECONDS ))
    left=$(( remaining - ${RESERVE[$name]} ))
    limit=$(( left > min ? left : min ))
    limit=$(( limit < max ? limit : max ))
    limit=$(( limit < remaining ? limit : remaining ))
    if (( limit < 10 )); then
        echo "=== $name: skipped, the budget is spent"
        record "$name" skipped 0 0 "$limit"
        return 0
    fi
    echo "=== $name (at most ${limit}s) $(date -u +%H:%M:%SZ)"
    start=$SECONDS
    set +e
    timeout --kill-after=15 "$limit" bash "$SELF" --step "$name"
    rc=$?
    set -e
    status=ok
    (( rc == 0 )) || status=failed
    (( rc == 124 || rc == 137 )) && status=timed_out
    record "$name" "$status" "$rc" $(( SECONDS - start )) "$limit"
    echo "=== $name: $status (rc $rc, $(( SECONDS - start ))s)"
    if [ -f "$STATE/pythonpath" ]; then
        PYTHONPATH="$(cat "$STATE/pythonpath")${PYTHONPATH:+:$PYTHONPATH}"
        export PYTHONPATH
        rm -f "$STATE/pythonpath"
    fi
}

tool() {  # tool NAME MODULE ATTR: NAME on PATH, else from its PyPI package, else empty
    command -v "$1" 2> /dev/null && return
    "$PYTHON" -c "import os, $2; p = os.path.join($2.$3, '$1'); print(p if os.path.exists(p) else '')" \
        2> /dev/null || true
}

detect_arch() {  # the GPU's compute capability as CMake wants it (9.0 -> 90)
    local cap=${MMENGINE_CUDA_ARCH:-}
    if [ -z "$cap" ] && command -v nvidia-smi > /dev/null; then
        cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2> /dev/null \
              | head -n 1 | tr -d ' .') || cap=""
    fi
    if [ -z "$cap" ]; then
        cap=$("$PYTHON" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}{n}")' \
              2> /dev/null) || cap=""
    fi
    [[ "$cap" =~ ^[0-9]+[a-z]?$ ]] && echo "$cap"
}

main() {
    echo "bench/gpu/run.sh: mode $MODE, out $OUT, python $PYTHON, budget ${BUDGET}s," \
         "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local order=()
    if [ "$MODE" = gpu ]; then
        ARCH=$(detect_arch) || { echo "no GPU compute capability (nvidia-smi, torch): is this" \
                                      "the GPU machine? (--dry-run runs on a CPU)" >&2; return 1; }
        order=(env:30:10 wheels:60:20 build:240:60 tests:270:120 bench-lstm-standard:90:40
               bench-lstm-model:60:30 bench-engine:90:40)
    else
        ARCH=""
        order=(env:30:10 wheels:30:10 build:150:20 tests:60:30 bench-check:60:30)
    fi
    export ARCH
    declare -gA RESERVE=()
    local i j later
    for ((i = 0; i < ${#order[@]}; i++)); do
        later=0
        for ((j = i + 1; j < ${#order[@]}; j++)); do later=$(( later + ${order[j]##*:} )); done
        RESERVE[${order[i]%%:*}]=$later
    done
    DEADLINE=$(( SECONDS + BUDGET ))
    for s in "${order[@]}"; do
        IFS=: read -r name max min <<< "$s"
        step "$name" "$max" "$min"
    done
    if [ "$MODE" = gpu ]; then
        cat "$STATE"/lstm-*.md > "$OUT/bench.md" 2> /dev/null || rm -f "$OUT/bench.md"
    fi
    "$PYTHON" bench/gpu/report.py summary --mode "$MODE" --state "$STATE" --out "$OUT"
}

if [ "${1:-}" = "--step" ]; then
    fn="step_${2//-/_}"
    "$fn"
    exit $?
fi

MODE=gpu
case "${1:-}" in
    --dry-run) MODE=dry-run ;;
    "") ;;
    -h|--help) sed -n '2,20p' "$SELF"; exit 0 ;;
    *) echo "usage: bash bench/gpu/run.sh [--dry-run]" >&2; exit 2 ;;
esac
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ "$MODE" = dry-run ] && [ -x .venv/bin/python ] && PYTHON=$ROOT/.venv/bin/python
fi
OUT=${OUT:-${TMPDIR:-/tmp}/mmengine-gpu-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STATE=$(mktemp -d "${TMPDIR:-/tmp}/mmengine-gpu-state.XXXXXX")
WHEELS=${MMENGINE_GPU_WHEELS:-.gpu-wheels}
if [ "$MODE" = gpu ]; then BUDGET=${MMENGINE_GPU_BUDGET_S:-450}; else BUDGET=${MMENGINE_GPU_BUDGET_S:-170}; fi
CMAKE=$(tool cmake cmake CMAKE_BIN_DIR)
NINJA=$(tool ninja ninja BIN_DIR)
[ -n "$CMAKE" ] || { echo "cmake not found (pip install cmake)" >&2; exit 1; }
export MODE OUT STATE WHEELS PYTHON CMAKE NINJA PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

set +e
main 2>&1 | tee -a "$OUT/run.log"
rc=${PIPESTATUS[0]}
set -e
rm -rf "$STATE"
exit "$rc"
