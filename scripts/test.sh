#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: venv + install, Redis and PostgreSQL found or
# started, chromium + chromium-driver for the console tests (Debian packages installed when absent), then pytest. Extra arguments go to pytest.
source "$(dirname "$0")/env.sh"
source "$ROOT/scripts/services.sh"
ensure_redis
ensure_postgres
ensure_chromium
exec python -m pytest "$@"
