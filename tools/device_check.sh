#!/usr/bin/env bash
# The prepared accelerator check (benchmarks/accelerator.py) on a lent GPU machine that
# has JAX, flax, optax, orbax and PyTorch but no package registry.
#
#   tools/device_check.sh fetch   # here, with pip and the registry: the missing wheels
#                                 # into .whl/ (ignored by git through .git/info/exclude)
#   tools/device_check.sh run     # there, .whl carried: installs them aside, then runs
#                                 # the check; the table in $OUT/accelerator.md
#
# The device tool's call: command "bash tools/device_check.sh run", carry [".whl"],
# timeout_s 600. The check ends within its budgets (7.5 min); `timeout` stops it at 9.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# What jaxseg needs beyond that machine's packages (and what grain needs beyond them).
WHEELS=(nibabel==5.4.2 ml-collections==1.1.0 grain==0.2.18 array-record==0.8.6
        portpicker==1.6.0 tensorboardX==2.6.5 importlib-resources==7.1.0)
PYTHON_VERSION=3.12  # that machine's python3

case "${1:-}" in
  fetch)
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version "$PYTHON_VERSION" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    ls -1 .whl
    du -sh .whl
    ;;
  run)
    if ! ls .whl/*.whl >/dev/null 2>&1; then
      echo 'device_check: no .whl/ here: run "fetch" first and carry .whl' >&2
      exit 2
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$root" PYTHONUNBUFFERED=1
    out="${OUT:-$root}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    timeout 540 python3 benchmarks/accelerator.py --output="$out/accelerator.md" 2>&1 \
      | tee "$out/accelerator.log"
    ;;
  *)
    echo "usage: $0 fetch|run" >&2
    exit 2
    ;;
esac
