#!/usr/bin/env bash
# First contact with a GPU: every headline figure from one command of at most 8 minutes (parts and limits:
# bench/gpu_first_contact.py; README, "GPU figures").
#
#   bash bench/gpu_first_contact.sh --prepare   # here, once, with package registries: fills .gpu/ (ignored by git)
#   bash bench/gpu_first_contact.sh             # on the bare GPU machine (its own python3 and torch); the device
#                                               # tool: run(command="bash bench/gpu_first_contact.sh", carry=[".gpu"])
#   bash bench/gpu_first_contact.sh --dry       # the plan, each part's limit and estimated seconds
#
# .gpu/ holds what a bare GPU machine (Python 3.12, torch, transformers, safetensors, ...) lacks to run ComfyUI 0.33
# in-process: four wheels (comfy-kitchen without its AMD/HIP extension, which an NVIDIA machine never loads:
# 48 MB instead of 59), the ComfyUI 0.33.0 source tarball, and the key shapes of the two diffusers folders (so the
# random weights are written without diffusers). Results: JSON lines on stdout and in $OUT/gpu_first_contact.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

GPU_DIR=.gpu
TARBALL=${COMFYUI_TARBALL:-../shared/comfyui/ComfyUI-0.33.0.tar.gz}
WHEELS=(comfy-aimdo==0.4.13 comfy-kitchen==0.2.31 torchsde==0.2.6 trampoline==0.1.2)
LIMIT_BYTES=$((64 * 1024 * 1024))
DEADLINE_S=480

prepare() {
    local py=${PYTHON:-.venv/bin/python}
    rm -rf "$GPU_DIR"
    mkdir -p "$GPU_DIR/wheels"
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$GPU_DIR/wheels" "${WHEELS[@]}"
    "$py" - "$GPU_DIR"/wheels/comfy_kitchen-*.whl <<'EOF'
import os, sys, zipfile
path = sys.argv[1]
with zipfile.ZipFile(path) as src, zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if not item.filename.startswith("comfy_kitchen/backends/hip/_C."):
            dst.writestr(item, src.read(item))
os.replace(path + ".tmp", path)
EOF
    cp "$TARBALL" "$GPU_DIR/"
    "$py" -m bench.gpu_first_contact --write-shapes "$GPU_DIR/full_shapes.json"
    local tree carried
    tree=$(git ls-files -z | xargs -0 cat | wc -c)
    carried=$(find "$GPU_DIR" -type f -exec cat {} + | wc -c)
    echo "{\"prepared\": \"$GPU_DIR\", \"tree_bytes\": $tree, \"carried_bytes\": $carried, \"limit_bytes\": $LIMIT_BYTES}"
    if [ $((tree + carried)) -gt "$LIMIT_BYTES" ]; then
        echo "the tree and $GPU_DIR together exceed 64 MiB: they would not travel to the GPU machine" >&2
        return 1
    fi
}

run_on_gpu() {
    local start=$SECONDS
    if [ ! -f "$GPU_DIR/full_shapes.json" ]; then
        echo "$GPU_DIR/ is missing: run 'bash bench/gpu_first_contact.sh --prepare' on a machine with network" >&2
        return 2
    fi
    SCRATCH=/tmp/ma-gpu-first-contact
    rm -rf "$SCRATCH"
    mkdir -p "$SCRATCH/site" "$SCRATCH/ComfyUI"
    trap 'rm -rf "$SCRATCH/weights"' EXIT  # the one random weight set (about 8 GB) never outlives the run
    for wheel in "$GPU_DIR"/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$SCRATCH/site"; done
    tar -xzf "$GPU_DIR"/ComfyUI-*.tar.gz -C "$SCRATCH/ComfyUI" --strip-components=1
    export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}" COMFYUI_PATH="$SCRATCH/ComfyUI" PYTHONUNBUFFERED=1
    local left=$((DEADLINE_S - (SECONDS - start)))
    # The Python side keeps its own deadline (parts are interrupted between windows); this one also stops a compile.
    timeout --signal=INT --kill-after=15 "$left" python3 -m bench.gpu_first_contact \
        --shapes "$GPU_DIR/full_shapes.json" --workdir "$SCRATCH/weights" "$@" 2>&1 | tee "${OUT:-$SCRATCH}/log.txt"
}

case "${1:-}" in
    --prepare) prepare ;;
    --dry) python3 -m bench.gpu_first_contact --dry ;;
    *) run_on_gpu "$@" ;;
esac
