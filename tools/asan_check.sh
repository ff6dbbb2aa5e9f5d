#!/usr/bin/env bash
# The kernel tests under AddressSanitizer, at each oneDNN level (the GroupNorm follows).
#
#   tools/asan_check.sh [pytest arguments]     (with jaxseg's environment active)
#
# Default: tests/test_onednn.py, test_fused_norm.py and test_kernel_fuzz.py at
# ONEDNN_MAX_CPU_ISA=ALL and AVX2 (the GEMM-based convolutions); ASAN_CHECK_ISAS="ALL
# AVX2 SSE41" to choose. The extensions are built with JAXSEG_SANITIZE=address in a
# temporary copy of the working tree (uncommitted changes included), never over the
# checkout's own, which other processes load. Exit status 0 when every run passed.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
copy=$(mktemp -d "${TMPDIR:-/tmp}/jaxseg_asan.XXXXXX")
trap 'rm -rf "$copy"' EXIT
(cd "$root" && git ls-files -z --cached --others --exclude-standard \
   | xargs -0 cp --parents --no-dereference -t "$copy" 2>/dev/null || true)
cd "$copy"
JAXSEG_SANITIZE=address python setup.py -q build_ext --inplace --force
ls jaxseg/_onednn*.so jaxseg/_group_norm*.so >/dev/null \
  || { echo 'asan_check: an extension was not built (see above)' >&2; exit 1; }

# Python is not built with ASan, so the runtime is preloaded. libstdc++ with it: ASan
# intercepts C++ throws, and jaxlib throws while loading, before Python has loaded
# libstdc++ itself (otherwise "CHECK failed ... real___cxa_throw"). Python, XLA and
# oneDNN keep memory until exit by design: leaks are not reported.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export ASAN_OPTIONS=detect_leaks=0 PYTHONPATH="$copy"
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/test_onednn.py tests/test_fused_norm.py
                                 tests/test_kernel_fuzz.py)
status=0
for isa in ${ASAN_CHECK_ISAS:-ALL AVX2}; do
  echo "== ONEDNN_MAX_CPU_ISA=$isa"
  # --capture=sys: pytest's default capture of fd 2 would lose the report of a process
  # that ASan ends inside a test.
  ONEDNN_MAX_CPU_ISA=$isa python -m pytest -n 0 -q --capture=sys -p no:cacheprovider \
    "${tests[@]}" || status=1
done
exit $status
