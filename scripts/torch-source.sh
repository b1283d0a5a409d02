#!/usr/bin/env bash
# Where this machine gets torch VERSION: prints the pip install arguments on stdout.
# Usage: torch-source.sh PYTHON VERSION
#   an NVIDIA driver answers    -> torch==VERSION (PyPI's default wheel: the CUDA build)
#   the CPU wheel index answers -> --index-url TORCH_CPU_INDEX torch==VERSION
#   a local CPU wheel           -> TORCH_WHEEL_DIR/torch-VERSION+cpu-*.whl
#   none of them                -> exit 1 with the reason: a CPU machine never gets the
#                                  multi-GB CUDA build by falling through to PyPI
set -euo pipefail
PYTHON=$1
VERSION=$2
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
WHEEL_DIR=${TORCH_WHEEL_DIR:-/opt/wheels}
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "torch==$VERSION"
elif "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" "$CPU_INDEX" 2>/dev/null; then
  echo "--index-url $CPU_INDEX torch==$VERSION"
else
  wheel=$(ls "$WHEEL_DIR"/torch-"$VERSION"+cpu-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "error: no CPU build of torch $VERSION: $CPU_INDEX does not answer and $WHEEL_DIR has no torch-$VERSION+cpu wheel (set TORCH_WHEEL_DIR); not installing PyPI's CUDA build on a machine without a GPU" >&2
    exit 1
  fi
  echo "$wheel"
fi
