#!/usr/bin/env bash
# Sourced by test.sh: find Redis and PostgreSQL, or install and start them; exports the test URLs.
# The tests run a redis-server of their own on a free port (tests/services.py): the machine's Redis,
# if any, is never touched. RERANKQ_TEST_REDIS_URL names one the tests may empty instead.
ensure_redis() {
  command -v redis-server >/dev/null || apt_install redis-server redis-tools
}

pg_ok() { python -c "import psycopg,sys; psycopg.connect(sys.argv[1], connect_timeout=3).close()" "$1" 2>/dev/null; }

ensure_postgres() {
  if [ -n "${RERANKQ_TEST_POSTGRES_URL:-}" ]; then return; fi
  local url=postgresql://postgres@127.0.0.1:5432/test
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
  command -v pgrep >/dev/null || apt_install procps
  if ! pg_ok "$url"; then
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    local ver; ver=$(ls /etc/postgresql | sort -V | tail -1)
    $sudo pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || true
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
    if ! pg_ok "$url"; then
      # A fresh Debian cluster asks for a password over TCP: give the postgres role one for the tests.
      url=postgresql://postgres:rerankq@127.0.0.1:5432/test
      $sudo -u postgres psql -qc "ALTER USER postgres PASSWORD 'rerankq'" >/dev/null 2>&1 \
        || runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'rerankq'" >/dev/null
      ($sudo -u postgres createdb test 2>/dev/null || runuser -u postgres -- createdb test 2>/dev/null) || true
    fi
  fi
  pg_ok "$url" || { echo "cannot reach PostgreSQL at ${url/:rerankq@/:***@}; set RERANKQ_TEST_POSTGRES_URL" >&2; exit 1; }
  export RERANKQ_TEST_POSTGRES_URL=$url
}

# The console's browser tests: Debian's chromium driven through chromium-driver (Selenium).
ensure_chromium() {
  { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || apt_install chromium chromium-driver
}
