#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: venv + install, Redis and PostgreSQL found or
# started, chromium + chromium-driver for the console tests (Debian packages installed when absent), then the
# layering and lint checks (pyproject.toml: [tool.importlinter], [tool.ruff]) and pytest. Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
echo "ruff check" >&2
ruff check --quiet .
echo "lint-imports" >&2
lint-imports --no-cache >/dev/null || lint-imports --no-cache  # quiet when kept; the full report names the import
source "$ROOT/scripts/services.sh"
ensure_redis
ensure_postgres
ensure_chromium
exec python -m pytest "$@"
