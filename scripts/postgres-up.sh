#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 (trust authentication, no fsync: for tests
# only) and prints its URL as the last line. Needs Debian's `postgresql` package.
#
#   bash scripts/postgres-up.sh [PORT] [DIR]     # default: a free port, a fresh temporary folder
#
# Stop it with: pg_ctl -D DIR/data stop (as the `postgres` user when run as root).
set -euo pipefail
port=${1:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
dir=${2:-$(mktemp -d /tmp/hub-postgres.XXXXXX)}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ]; then
    echo "PostgreSQL is not installed (Debian package postgresql)" >&2
    exit 1
fi
# The server refuses to run as root: as root, the cluster belongs to the `postgres` user.
as=()
if [ "$(id -u)" -eq 0 ]; then
    as=(runuser -u postgres --)
fi
mkdir -p "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
if [ ! -f "$dir/data/PG_VERSION" ]; then
    "${as[@]}" "$bin/initdb" -A trust -U postgres -D "$dir/data" >"$dir/initdb.log" 2>&1
fi
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=400" \
    start >/dev/null
echo "postgres://postgres@127.0.0.1:$port/postgres"
