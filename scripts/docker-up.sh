#!/usr/bin/env bash
# Makes sure a Docker engine answers, starting one if needed (root, Debian's docker.io), and
# builds the local test images the integration tests use (no registry is reachable here).
#
#   bash scripts/docker-up.sh          # prints the DOCKER_HOST to use on its last line
#
# Environment: HUB_DOCKER_HOST / DOCKER_HOST (an engine to use instead of starting one),
# HUB_DOCKER_ROOT (state folder of a started engine, default /var/lib/commandcenter-hub-docker).
set -euo pipefail
cd "$(dirname "$0")/.."

host=${HUB_DOCKER_HOST:-${DOCKER_HOST:-unix:///var/run/docker.sock}}
export DOCKER_HOST=$host

if ! docker version >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    case $host in
        unix://*) socket=${host#unix://} ;;
        *) echo "no engine answers at $host, and only a unix socket can be started here" >&2; exit 1 ;;
    esac
    root=${HUB_DOCKER_ROOT:-/var/lib/commandcenter-hub-docker}
    mkdir -p "$root/data" "$root/exec" "$(dirname "$socket")"
    # vfs works on any file system (no overlay support needed); the engine outlives this script.
    nohup dockerd --storage-driver=vfs --data-root "$root/data" --exec-root "$root/exec" \
        -H "unix://$socket" --pidfile "$root/dockerd.pid" >"$root/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
        docker version >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker version >/dev/null 2>&1 || { echo "dockerd did not start; see $root/dockerd.log" >&2; tail -20 "$root/dockerd.log" >&2; exit 1; }
fi

bash scripts/build-test-images.sh
echo "$DOCKER_HOST"
