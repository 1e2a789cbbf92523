#!/usr/bin/env bash
# Build the libFuzzer harnesses with ASan + UBSan (clang; Debian: apt-get install clang
# libclang-rt-14-dev).
#
#   tests/fuzz/build.sh [OUT_DIR]      (default build/fuzz)
#
# Produces OUT_DIR/flac_fuzzer (with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION: the decoder
# computes its CRCs but does not refuse a mismatch) and OUT_DIR/frontend_fuzzer. The front-end kernels are compiled
# once per ISA (scalar, avx2, avx512) as CMakeLists.txt does, so the fuzzer runs every kernel
# the CPU supports. No OpenMP: compute() runs on one thread (the work split is the same code).
# Run one: OUT_DIR/flac_fuzzer -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/flac
# Reproduce a finding: OUT_DIR/flac_fuzzer crash-<sha1>
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-build/fuzz}
CXX=${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}
if [ -z "$CXX" ]; then
  echo "build.sh: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
mkdir -p "$OUT/obj"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
FLAGS="-std=c++17 -g -O1 -Icsrc $SAN"
ARCH=$(uname -m)
DEFS=""
ISAS="scalar"
if [ "$ARCH" = "x86_64" ]; then
  DEFS="-DMMENGINE_X86_VARIANTS"
  ISAS="scalar avx2 avx512"
fi
isa_flags() {
  case "$1" in
    avx2) echo "-mavx2 -mfma -mf16c" ;;
    avx512) echo "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c" ;;
    *) echo "" ;;
  esac
}

pids=()
"$CXX" $FLAGS -fsanitize=fuzzer -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION tests/fuzz/flac_fuzzer.cpp csrc/audio/flac.cpp \
  -o "$OUT/flac_fuzzer" & pids+=($!)
objs=()
for isa in $ISAS; do
  # shellcheck disable=SC2046
  "$CXX" $FLAGS -fsanitize=fuzzer-no-link $DEFS -DMMENGINE_ISA_NS=$isa $(isa_flags $isa) \
    -c csrc/frontend/frontend_kernels.cpp -o "$OUT/obj/frontend_kernels_$isa.o" & pids+=($!)
  objs+=("$OUT/obj/frontend_kernels_$isa.o")
done
for p in "${pids[@]}"; do wait "$p"; done
"$CXX" $FLAGS -fsanitize=fuzzer $DEFS tests/fuzz/frontend_fuzzer.cpp csrc/frontend/frontend.cpp \
  "${objs[@]}" -o "$OUT/frontend_fuzzer"
echo "built $OUT/flac_fuzzer $OUT/frontend_fuzzer ($($CXX --version | head -n 1))"
