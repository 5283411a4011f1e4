#!/usr/bin/env bash
# The baseline for benches/stack.rs: the 4-service test stack started by hand with `docker run`,
# in dependency order, waiting for each service the way a careful script would (redis answering
# PING, the web servers answering HTTP). Prints the seconds it took, then removes everything.
#
#   bash scripts/bench-docker-run.sh BASE_PORT
set -euo pipefail
base=${1:-33000}
name=benchrun-$$
net=$name-net

wait_redis() {
    until [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; do sleep 0.2; done
}
wait_http() {
    until busybox wget -q -O /dev/null "http://127.0.0.1:$1/" 2>/dev/null; do sleep 0.2; done
}

start=$(date +%s.%N)
docker network create "$net" >/dev/null
docker volume create "$name-db" >/dev/null
docker volume create "$name-cache" >/dev/null
docker run -d --name "$name-db" --network "$net" --network-alias db -p "127.0.0.1:$((base + 2)):6379" \
    -v "$name-db:/data" hubtest/redis:latest >/dev/null
wait_redis "$((base + 2))"
docker run -d --name "$name-cache" --network "$net" --network-alias cache -p "127.0.0.1:$((base + 3)):6379" \
    -v "$name-cache:/data" \
    hubtest/redis:latest /usr/bin/redis-server --protected-mode no --dir /data --appendonly yes >/dev/null
wait_redis "$((base + 3))"
docker run -d --name "$name-backend" --network "$net" --network-alias backend -p "127.0.0.1:$base:8000" \
    hubtest/busybox:latest /bin/httpd -f -p 8000 -h /www >/dev/null
wait_http "$base"
docker run -d --name "$name-frontend" --network "$net" --network-alias frontend -p "127.0.0.1:$((base + 1)):3000" \
    hubtest/busybox:latest /bin/httpd -f -p 3000 -h /www >/dev/null
wait_http "$((base + 1))"
end=$(date +%s.%N)

docker rm -f "$name-db" "$name-cache" "$name-backend" "$name-frontend" >/dev/null
docker network rm "$net" >/dev/null
docker volume rm "$name-db" "$name-cache" >/dev/null
echo "$end - $start" | bc -l
