#!/bin/bash
# On the GPU machine, from the project root, bundle unpacked in /tmp/vllm-bundle/site (README.md):
#   bash bench/gpu_e2e/run_live.sh KIT MODEL [more live.py args]   (KIT: tok.tar.xz, debs/, extra/*.whl for uvicorn
#   and python-multipart, which `producer serve` and `vllm serve` import and the bundle lacks)
set -u
K=$(cd "$1" && pwd)
D=/tmp/vllm-bundle
[ -d "$D/site" ] || { echo "no $D/site: stage the bundle first (README.md)"; exit 1; }
mkdir -p /tmp/live-extra && for w in "$K"/extra/*.whl; do /opt/torch/.venv/bin/python3 -m zipfile -e "$w" /tmp/live-extra; done
export PYTHONPATH=$D/site:/tmp/live-extra HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
export OUT=${OUT:-/tmp/live-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv,noheader
set -o pipefail
/opt/torch/.venv/bin/python3 bench/gpu_e2e/live.py --tok "$K/tok.tar.xz" --debs "$K/debs" --model "$2" "${@:3}" 2>&1 | tee "$OUT/live-$2.log"
