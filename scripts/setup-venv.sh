#!/usr/bin/env bash
# Create the virtualenv and install cloudml into it: `make setup` (and so `make run`,
# `make test`) on a fresh machine. Usage: setup-venv.sh PYTHON VENV
#
# 1. Refuse a Python older than 3.11 (pyproject's requires-python) with one clear line.
# 2. torch first, pinned to pyproject's version, from where the right build is
#    (scripts/torch-source.sh): PyPI's CUDA wheel on a machine with an NVIDIA driver, else
#    the CPU wheel index when it answers, else a local CPU wheel (TORCH_WHEEL_DIR, default
#    /opt/wheels); a CPU machine never gets the CUDA build.
# 3. cloudml with its dev extras (the torch pin is already met, so pip keeps that build).
# pip runs quiet (-qq: errors only, no progress bar) so a first `make run` stays short.
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}
cd "$(dirname "$0")/.."

# 1. Python >= 3.11
if ! command -v "$PYTHON" >/dev/null; then
  echo "error: $PYTHON not found; cloudml needs Python 3.11 or newer (make PYTHON=python3.11 ...)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  found=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  echo "error: cloudml needs Python 3.11 or newer; $PYTHON is $found (make PYTHON=python3.11 ...)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setting up $VENV (first run only: a few minutes)"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian splits venv/ensurepip into python3-venv
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV" && "$PYTHON" -m venv "$VENV"
    else
      echo "error: $PYTHON -m venv failed; install Debian's python3-venv (needs root)" >&2
      exit 1
    fi
  fi
fi
PIP=("$VENV/bin/python" -m pip install -qq --progress-bar off --disable-pip-version-check)

# 2. torch, the build that fits this machine
pin=$(sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' pyproject.toml)
have=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [ "${have%%+*}" != "$pin" ]; then
  src=$(bash scripts/torch-source.sh "$VENV/bin/python" "$pin")  # exits with the reason
  # shellcheck disable=SC2086  # src is pip arguments, split on purpose
  "${PIP[@]}" $src
fi

# 3. cloudml and its dependencies (torch==pin is met by the build above)
"${PIP[@]}" -e '.[dev]'
