#!/usr/bin/env bash
# Builds the local images the tests run, from binaries of this host (no registry needed):
#   hubtest/busybox:latest  busybox-static: sh, httpd, nc, wget, sleep, …
#   hubtest/redis:latest    redis-server and redis-cli with their shared libraries
# Each is rebuilt only when missing.
set -euo pipefail

need=()
command -v busybox >/dev/null || need+=(busybox-static)
command -v redis-server >/dev/null || need+=(redis-server)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=copy-libs.sh
source "$(dirname "${BASH_SOURCE[0]}")/copy-libs.sh"

if ! docker image inspect hubtest/busybox:latest >/dev/null 2>&1; then
    root=$work/busybox
    mkdir -p "$root/bin" "$root/tmp" "$root/www" "$root/etc"
    cp "$(command -v busybox)" "$root/bin/busybox"
    for applet in sh ls cat echo httpd nc sleep wget mkdir rm kill ps env true false grep; do
        ln -s busybox "$root/bin/$applet"
    done
    echo '<h1>hubtest</h1>' >"$root/www/index.html"
    echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/bin' \
        -c 'CMD ["/bin/httpd", "-f", "-p", "8000", "-h", "/www"]' \
        - hubtest/busybox:latest >/dev/null
    echo "built hubtest/busybox:latest"
fi

if ! docker image inspect hubtest/redis:latest >/dev/null 2>&1; then
    root=$work/redis
    mkdir -p "$root/data" "$root/tmp"
    copy_with_libs "$root" "$(command -v redis-server)" "$(command -v redis-cli)"
    tar -C "$root" -c . | docker import \
        -c 'WORKDIR /data' \
        -c 'CMD ["/usr/bin/redis-server", "--protected-mode", "no", "--dir", "/data"]' \
        - hubtest/redis:latest >/dev/null
    echo "built hubtest/redis:latest"
fi
