#!/usr/bin/env bash
# The compiled kernels under AddressSanitizer: every CPU variant built with
# -fsanitize=address into a temporary folder, then the tests that drive the kernels (the
# fuzzed folders included) run against those builds (MUVERA_NATIVE_DIR), with libasan
# preloaded into Python. Any out-of-bounds read or write aborts the run. (hnswlib frees its
# results with the wrong operator delete: alloc_dealloc_mismatch is off for that.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
MUVERA_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" "$PY" - "$out" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, ".")
import hatch_build as hook
out = Path(sys.argv[1])
for variant in hook.wanted_variants(Path(".")):
    name = hook.load_variants(Path(".")).library_filename(variant)
    error = hook.compile_kernel(Path("."), out / name, variant)
    if error:
        raise SystemExit(error)
    print(f"built {name} with AddressSanitizer")
PY
asan=$(${CC:-cc} -print-file-name=libasan.so)
if [ ! -f "$asan" ]; then
  echo "test-asan: the C compiler has no AddressSanitizer runtime (libasan.so); skipped"
  exit 0
fi
# libstdc++ too: hnswlib throws C++ exceptions, which ASan intercepts
libasan="$asan $(${CC:-cc} -print-file-name=libstdc++.so)"
LD_PRELOAD="$libasan" ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=1:log_path=${ASAN_LOG:-/dev/stderr} MUVERA_NATIVE_DIR="$out" \
  CI=1 "$PY" -m pytest -q -p no:cacheprovider tests/test_fuzz.py tests/test_native.py \
  tests/test_dispatch.py tests/test_hnsw_graph.py tests/test_hostile.py tests/test_maxsim.py \
  tests/test_formats.py tests/test_index.py tests/test_encoder.py tests/test_golden.py \
  tests/test_cells.py tests/test_cell_postings.py tests/test_residual_tokens.py tests/test_links.py \
  tests/test_token_codes.py
