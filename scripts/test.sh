#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs
# formatting and lint checks, the Rust tests and the Python tests.
#
#   bash scripts/test.sh
#
# Environment: CARGO_TARGET_DIR (default ~/.cache/commandcenter-hub/target, outside the clone so
# CI runs reuse it), HUB_VENV (default ~/.cache/commandcenter-hub/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/commandcenter-hub
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
venv=${HUB_VENV:-$cache/venv}

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v busybox >/dev/null || need+=(busybox-static)
command -v dockerd >/dev/null || need+=(docker.io)
# `script` and tmux give the command-line tests a terminal (live progress bar, Ctrl-C).
command -v script >/dev/null || need+=(bsdutils)
command -v tmux >/dev/null || need+=(tmux)
# The registry, the task store and the deployment test also run on PostgreSQL.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# The deployment test brings deploy/compose.yaml up with Debian's docker-compose.
command -v docker-compose >/dev/null || need+=(docker-compose)
# The dashboard's browser tests drive Debian's Chromium (Playwright with executable_path).
command -v chromium >/dev/null || need+=(chromium)
# promtool checks and unit-tests the shipped alert rules, and lints /metrics (the server
# itself is not needed, so nothing it recommends either).
lean=()
command -v promtool >/dev/null || lean+=(prometheus)
if ((${#need[@]} + ${#lean[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        if ((${#need[@]})); then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
        fi
        if ((${#lean[@]})); then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${lean[@]}" >/dev/null
        fi
    else
        echo "missing packages: ${need[*]} ${lean[*]} (run as root, or install them)" >&2
        exit 1
    fi
fi

step "docker engine and test images"
DOCKER_HOST=$(bash scripts/docker-up.sh | tail -n 1)
export DOCKER_HOST
echo "engine at $DOCKER_HOST"

step "redis-server for the tests"
# One server on a free loopback port for the behaviour suite and the Python tests (the
# multi-process tests start their own, which they kill and restart). Stopped on exit.
cleanup=()
on_exit() { for command in "${cleanup[@]}"; do eval "$command" || true; done; }
trap on_exit EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_dir=$(mktemp -d)
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$redis_dir" --save '' \
    --appendonly no --loglevel warning >"$redis_dir/log" 2>&1 &
redis_pid=$!
cleanup+=("kill $redis_pid 2>/dev/null; rm -rf '$redis_dir'")
for _ in $(seq 1 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
export HUB_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
echo "redis at $HUB_TEST_REDIS_URL"

step "postgresql for the tests"
# A throwaway cluster on a free loopback port (trust authentication, no fsync); every test makes
# a database of its own in it. Stopped on exit.
pg_dir=$(mktemp -d /tmp/hub-postgres.XXXXXX)
export HUB_TEST_POSTGRES_URL
HUB_TEST_POSTGRES_URL=$(bash scripts/postgres-up.sh "$(free_port)" "$pg_dir" | tail -n 1)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg_as=""
[ "$(id -u)" -eq 0 ] && pg_as="runuser -u postgres --"
cleanup+=("$pg_as '$pg_bin/pg_ctl' -D '$pg_dir/data' -m fast stop >/dev/null; rm -rf '$pg_dir'")
echo "postgresql at $HUB_TEST_POSTGRES_URL"

step "python tools (virtualenv)"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check "maturin>=1.7,<2" pytest pytest-timeout \
    schemathesis mypy playwright prometheus_client

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "schemathesis: fuzzing the HTTP API from /openapi.json"
# A hub of its own (temporary data, browse root and port); the never-ending event streams are
# covered by the end-to-end tests instead. `filter_too_much` is hypothesis judging its own
# generator (some seeds draw few valid path parameters), not a finding about the API.
fuzz=$(mktemp -d)
port=$(free_port)
mkdir -p "$fuzz/browse"
"$CARGO_TARGET_DIR/debug/hub" serve --bind "127.0.0.1:$port" --data-dir "$fuzz/state" \
    --browse-root "$fuzz/browse" >"$fuzz/hub.log" 2>&1 &
hub_pid=$!
cleanup+=("kill $hub_pid 2>/dev/null; rm -rf '$fuzz'")
for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health')" 2>/dev/null && break
    sleep 0.1
done
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples 30 --request-timeout 10 --exclude-path-regex 'events$' \
    --suppress-health-check=filter_too_much

step "property tests: hostile paths and names against a real hub (hypothesis)"
HUB_BIN="$CARGO_TARGET_DIR/debug/hub" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --timeout=600 tests/fuzz

step "/metrics read with Prometheus' text parser, linted by promtool; the alert rules tested"
promtool check rules docs/monitoring/hub-alerts.yml
promtool check config docs/monitoring/prometheus.yml
promtool test rules docs/monitoring/hub-alerts.test.yml
HUB_BIN="$CARGO_TARGET_DIR/debug/hub" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --timeout=600 tests/metrics

step "python bindings (maturin) and pytest"
wheels=$cache/wheels
rm -rf "$wheels"
"$venv/bin/maturin" build --quiet --manifest-path hub-py/Cargo.toml --out "$wheels" \
    --interpreter "$venv/bin/python"
wheel=$(ls "$wheels"/commandcenter_hub-*.whl)
# Into the test virtualenv, and into the machine's own interpreter so that a plain
# `python -c "import commandcenter_hub"` works after this script.
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
python3 -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel" \
    || echo "note: could not install the wheel into $(command -v python3); use $venv" >&2
python3 -c "import commandcenter_hub; print('commandcenter_hub', commandcenter_hub.__version__, 'imports')"
# The typed surface: the package itself and a typed example, under mypy --strict.
"$venv/bin/mypy" --strict hub-py/examples/quickstart.py
(cd hub-py/python && "$venv/bin/mypy" --strict -p commandcenter_hub)
# The real thing: SQLite files, the Docker engine, the hub binary (CARGO_TARGET_DIR/debug/hub).
"$venv/bin/python" -m pytest -q --timeout=600 hub-py/tests

step "the compose deployment: image, PostgreSQL, Redis, hub serve, two workers (docker-compose)"
HUB_BIN="$CARGO_TARGET_DIR/debug/hub" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --timeout=900 tests/deploy

step "the dashboard in headless Chromium (Playwright)"
# Screenshots: tests/browser/artifacts/ (every test's last view) and docs/screenshots/ (README).
HUB_BIN="$CARGO_TARGET_DIR/debug/hub" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --timeout=600 tests/browser

step "all checks passed"
