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
# Test modules run side by side, each whole in one process (pytest-xdist, --dist loadfile: a module's workers,
# database and Redis stay its own): RERANKQ_TEST_PROCESSES at once, by default one more than the cores (much of a
# test is waiting on workers); 1 runs them one after another, as do -n/--pdb/-p no:xdist given here.
# The slowest tests are listed at the end (--durations; a later --durations=N replaces it).
processes=${RERANKQ_TEST_PROCESSES:-$(( $(nproc) + 1 ))}
# Several vLLM CPU engines share the cores here: their OpenMP threads sleep when idle instead of spinning
# (libgomp's default spins), which the other processes' work would otherwise wait behind. Tests only.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
parallel=(-n "$processes" --dist loadfile --no-loadscope-reorder)  # keep conftest's order: longest modules first
case " $* " in *" -n"*|*" --numprocesses"*|*" --pdb"*|*"no:xdist"*) parallel=() ;; esac
[ "$processes" -gt 1 ] || parallel=()
exec python -m pytest --durations=25 "${parallel[@]}" "$@"
