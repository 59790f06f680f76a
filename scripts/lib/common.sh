# Shared by scripts/test and scripts/demo: a uv binary and the project's virtual environment,
# built from nothing with only python3 and pip.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEV_DIR="$ROOT/.pgtrail-dev"
export UV_PROJECT_ENVIRONMENT="$ROOT/.venv"

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then
    UV="$(command -v uv)"
  else
    UV="$DEV_DIR/uv/bin/uv"
    if [ ! -x "$UV" ]; then
      echo "==> installing uv into .pgtrail-dev/uv"
      python3 -m venv "$DEV_DIR/uv"
      "$DEV_DIR/uv/bin/pip" install --quiet --disable-pip-version-check 'uv>=0.5,<1'
    fi
  fi
  export UV
}

sync_env() {
  ensure_uv
  echo "==> syncing .venv from uv.lock"
  "$UV" sync --locked --quiet
}

need_binaries() {
  # PostgreSQL and Redis: a running server, or the binaries to start a throwaway one.
  local missing=0
  if ! "$ROOT/.venv/bin/python" -c 'import sys; from pgtrail.ops.devservices import port_open; sys.exit(0 if port_open("127.0.0.1", 5432) else 1)' \
     && ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "PostgreSQL is neither running on 127.0.0.1:5432 nor installed. Install it with:" >&2
    echo "  apt-get install -y postgresql" >&2
    missing=1
  fi
  if ! "$ROOT/.venv/bin/python" -c 'import sys; from pgtrail.ops.devservices import port_open; sys.exit(0 if port_open("127.0.0.1", 6379) else 1)' \
     && ! command -v redis-server >/dev/null 2>&1; then
    echo "Redis is neither running on 127.0.0.1:6379 nor installed. Install it with:" >&2
    echo "  apt-get install -y redis-server" >&2
    missing=1
  fi
  return $missing
}

need_chromium() {
  # The web UI's browser tests drive Debian's Chromium (Playwright cannot download one here).
  command -v chromium >/dev/null 2>&1 && return 0
  echo "==> installing chromium for the web UI's browser tests"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]+"${sudo[@]}"}" apt-get update -qq
  "${sudo[@]+"${sudo[@]}"}" apt-get install -y -qq chromium
}
