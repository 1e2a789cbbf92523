#!/usr/bin/env bash
# Source coverage of a fuzz corpus: builds the harness with clang's source-based coverage (no
# sanitizers), runs every input of the corpus once, prints llvm-cov's report for the sources
# under test.
#
#   tests/fuzz/coverage.sh flac CORPUS_DIR [OUT_DIR]
#   tests/fuzz/coverage.sh frontend CORPUS_DIR [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
WHICH=$1
CORPUS=$2
OUT=${3:-build/fuzz-cov}
CXX=${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14)}
LLVM_BIN=$(dirname "$(readlink -f "$CXX")")
PROFDATA=$(command -v llvm-profdata || echo "$LLVM_BIN/llvm-profdata")
LLVMCOV=$(command -v llvm-cov || echo "$LLVM_BIN/llvm-cov")
mkdir -p "$OUT"
COV="-std=c++17 -O1 -g -Icsrc -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping"
case "$WHICH" in
  flac)
    SOURCES="csrc/audio/flac.cpp"
    "$CXX" $COV -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION tests/fuzz/flac_fuzzer.cpp \
      $SOURCES -o "$OUT/flac_cov" ;;
  frontend)
    SOURCES="csrc/frontend/frontend.cpp csrc/frontend/frontend_kernels.cpp"
    objs=()
    for isa in scalar avx2 avx512; do
      case $isa in
        avx2) f="-mavx2 -mfma -mf16c" ;;
        avx512) f="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c" ;;
        *) f="" ;;
      esac
      # shellcheck disable=SC2086
      "$CXX" ${COV/-fsanitize=fuzzer/-fsanitize=fuzzer-no-link} -DMMENGINE_X86_VARIANTS \
        -DMMENGINE_ISA_NS=$isa $f -c csrc/frontend/frontend_kernels.cpp -o "$OUT/k_$isa.o"
      objs+=("$OUT/k_$isa.o")
    done
    "$CXX" $COV -DMMENGINE_X86_VARIANTS tests/fuzz/frontend_fuzzer.cpp csrc/frontend/frontend.cpp \
      "${objs[@]}" -o "$OUT/frontend_cov" ;;
  *) echo "usage: $0 flac|frontend CORPUS_DIR [OUT_DIR]" >&2; exit 2 ;;
esac
LLVM_PROFILE_FILE="$OUT/$WHICH.profraw" "$OUT/${WHICH}_cov" -runs=0 "$CORPUS" >/dev/null 2>&1
"$PROFDATA" merge -sparse "$OUT/$WHICH.profraw" -o "$OUT/$WHICH.profdata"
# shellcheck disable=SC2086
"$LLVMCOV" report "$OUT/${WHICH}_cov" -instr-profile="$OUT/$WHICH.profdata" $SOURCES
