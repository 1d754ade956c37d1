#!/bin/bash
# On the GPU machine, from the project root, bundle unpacked in /tmp/vllm-bundle/site (see README.md):
#   bash bench/gpu_e2e/run.sh KIT MODEL PAIRS [more e2e.py args]     (KIT holds tok.tar.xz and debs/)
set -u
K=$(cd "$1" && pwd)
D=/tmp/vllm-bundle
[ -d "$D/site" ] || { echo "no $D/site: stage the bundle first (README.md)"; exit 1; }
export PYTHONPATH=$D/site HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
export OUT=${OUT:-/tmp/e2e-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv,noheader
set -o pipefail
/opt/torch/.venv/bin/python3 bench/gpu_e2e/e2e.py --tok "$K/tok.tar.xz" --debs "$K/debs" --model "$2" --pairs "$3" "${@:4}" 2>&1 | tee "$OUT/e2e-$2.log"
