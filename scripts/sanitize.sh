#!/usr/bin/env bash
# Build the C kernels of ops/ with AddressSanitizer + UndefinedBehaviorSanitizer into a private
# copy of the package, then run the conformance kit, the C-kernel tests, the robustness tests
# and a fuzz run on them. Any sanitizer report fails the run (UBSan halts on the first error,
# ASan aborts); the shared build in ortnpu/domain/ is never touched.
#
#   scripts/sanitize.sh                 # conformance + kernel tests + 1000 fuzz cases
#   FUZZ_CASES=5000 scripts/sanitize.sh
#
# Needs gcc (or clang) with libasan/libubsan. The build goes through ops/build_native.py with
# ORTNPU_EXTRA_CFLAGS, the hook that file provides for sanitizer builds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${SANITIZE_DIR:-${TMPDIR:-/tmp}/ortnpu-sanitize}
FUZZ_CASES=${FUZZ_CASES:-1000}
FUZZ_SEED=${FUZZ_SEED:-0}
PY=${PYTHON:-python}
CC_BIN=${CC:-gcc}
FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g"

echo "== copying the tree to $WORK"
rm -rf "$WORK"
mkdir -p "$WORK"
(cd "$ROOT" && tar --exclude='*.so' --exclude='__pycache__' --exclude='ops/_build' \
    -cf - ortnpu ops tests scripts pyproject.toml) | tar -xf - -C "$WORK"

echo "== building the C kernels with $FLAGS"
(cd "$WORK" && ORTNPU_EXTRA_CFLAGS="$FLAGS" "$PY" ops/build_native.py)

ASAN_LIB=$("$CC_BIN" -print-file-name=libasan.so)
if [ ! -e "$ASAN_LIB" ]; then
    echo "libasan.so not found (got '$ASAN_LIB'); install the compiler's sanitizer runtime" >&2
    exit 2
fi
# libstdc++ must be loaded before ASan initialises, or ASan's __cxa_throw interceptor has no
# real function to call and the first C++ exception onnxruntime throws (say, for a model it
# refuses) ends in "CHECK failed: real___cxa_throw != 0". Python itself does not link it.
STDCXX_LIB=$("$CC_BIN" -print-file-name=libstdc++.so)
LOG="$WORK/sanitizer-reports"
mkdir -p "$LOG"
export LD_PRELOAD="$ASAN_LIB $STDCXX_LIB"
# Python itself leaks by design at exit; onnxruntime's allocator is not instrumented.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$LOG/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOG/ubsan"
export PYTHONPATH="$WORK"
export ORTNPU_KERNELS=c
# C tests fail instead of skipping, and the fuzz run fails, if the sanitized module is missing
export ORTNPU_REQUIRE_C=1
cd "$WORK"

# Everything below must run the sanitized copy: check that ortnpu and its C module come from it
# (the fuzz workers check that they import the same package as scripts/fuzz.py).
"$PY" - "$WORK" <<'PYCHECK'
import os, sys
import ortnpu
from ortnpu.domain import kernels, native
work = os.path.realpath(sys.argv[1])
assert native.AVAILABLE, f"sanitized C module missing: {native.IMPORT_ERROR}"
for what, path in (("ortnpu", ortnpu.__file__), ("C module", native._native.__file__)):
    assert os.path.realpath(path).startswith(work + os.sep), f"{what} from {path}, not {work}"
print(kernels.describe(), "from", native._native.__file__)
PYCHECK

status=0
echo "== conformance kit (every suite, C kernels)"
"$PY" -m ortnpu conformance || status=1
echo "== C-kernel, robustness and plugin-EP tests"
"$PY" -m pytest -q -p no:cacheprovider tests/test_native_kernels.py tests/test_robustness.py \
    tests/test_runtime.py tests/test_native_program.py tests/test_ep.py \
    tests/oracle/test_ep_conformance.py || status=1
echo "== fuzz: $FUZZ_CASES cases, seed $FUZZ_SEED (no address-space cap: ASan reserves shadow memory)"
"$PY" scripts/fuzz.py --cases "$FUZZ_CASES" --seed "$FUZZ_SEED" --jobs 2 --memory-gib 0 \
    --timeout 300 || status=1

reports=$(find "$LOG" -type f | wc -l)
if [ "$reports" -ne 0 ]; then
    echo "== sanitizer reports in $LOG:" >&2
    head -n 40 "$LOG"/* >&2
    status=1
fi
if [ "$status" -eq 0 ]; then
    echo "== sanitizers clean: no ASan or UBSan report"
else
    echo "== FAILED (see above)" >&2
fi
exit "$status"
