#!/usr/bin/env bash
# Builds the `commandcenter-hub` image without a registry or a base image: the `hub` binary and
# the shared libraries it loads, imported with `docker import`.
#
#   bash scripts/build-image.sh [--binary PATH] [--tag NAME:TAG] [--with-services]
#
#   --binary PATH     put this `hub` binary in the image (default: `cargo build --release`'s)
#   --tag NAME:TAG    the image's name (default: commandcenter-hub:latest)
#   --with-services   also build commandcenter-hub/postgres:15 and commandcenter-hub/redis:7 from
#                     this host's Debian packages, stand-ins for the postgres:15 and redis:7
#                     images on machines that cannot pull them (set HUB_POSTGRES_IMAGE and
#                     HUB_REDIS_IMAGE to use them with deploy/compose.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
tag=commandcenter-hub:latest
services=false
while (($#)); do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --with-services) services=true; shift ;;
        *) echo "unknown argument: $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done

if [ -z "$binary" ]; then
    cargo build --release --locked -p hub-http --bin hub
    binary=${CARGO_TARGET_DIR:-target}/release/hub
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=copy-libs.sh
source scripts/copy-libs.sh

# The hub: /usr/local/bin/hub, its libraries, a writable /tmp and a data folder.
root=$work/hub
mkdir -p "$root/usr/local/bin" "$root/tmp" "$root/var/lib/commandcenter-hub" "$root/etc"
chmod 1777 "$root/tmp"
cp -L "$binary" "$root/usr/local/bin/hub"
copy_libs "$root" "$binary"
echo 'root:x:0:0:root:/root:/usr/local/bin/hub' >"$root/etc/passwd"
version=$("$binary" --version | awk '{print $2}')
tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/bin' \
    -c 'ENV HUB_DATA_DIR=/var/lib/commandcenter-hub' \
    -c 'ENV HUB_LOG=info' \
    -c 'EXPOSE 8000' \
    -c 'LABEL dev.commandcenter.hub.image=hub' \
    -c 'ENTRYPOINT ["/usr/local/bin/hub"]' \
    -c 'CMD ["serve", "--bind", "0.0.0.0:8000"]' \
    -c "LABEL org.opencontainers.image.title=commandcenter-hub org.opencontainers.image.version=$version" \
    - "$tag" >/dev/null
echo "built $tag ($version)"
# What an earlier build of the same tag left untagged.
docker image prune -f --filter label=dev.commandcenter.hub.image >/dev/null

$services || exit 0

# PostgreSQL from Debian's package, initialised on first start the way the postgres image
# is (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB), running as the `postgres` user.
command -v busybox >/dev/null || { echo "--with-services needs busybox-static" >&2; exit 1; }
pg=$(ls -d /usr/lib/postgresql/*/ 2>/dev/null | sort -V | tail -n 1)
[ -n "$pg" ] || { echo "--with-services needs Debian's postgresql package" >&2; exit 1; }
pg=${pg%/}
major=$(basename "$pg")
root=$work/postgres
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/var/run/postgresql" "$root/var/lib/postgresql/data"
chmod 1777 "$root/tmp"
cp "$(command -v busybox)" "$root/bin/busybox"
for applet in sh cat echo rm mkdir chmod; do ln -s busybox "$root/bin/$applet"; done
copy_with_libs "$root" "$pg"/bin/*
find "$pg/lib" -name '*.so' -print0 | while IFS= read -r -d '' lib; do copy_with_libs "$root" "$lib"; done
mkdir -p "$root/usr/share/postgresql"
cp -a "/usr/share/postgresql/$major" "$root/usr/share/postgresql/"
mkdir -p "$root/usr/share/zoneinfo/Etc"
cp -L /usr/share/zoneinfo/Etc/UTC "$root/usr/share/zoneinfo/Etc/UTC"
cp -L /usr/share/zoneinfo/UTC "$root/usr/share/zoneinfo/UTC"
printf 'root:x:0:0::/:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' >"$root/etc/group"
cat >"$root/bin/entrypoint" <<SCRIPT
#!/bin/sh
set -e
export PATH=$pg/bin:/bin
data=\${PGDATA:-/var/lib/postgresql/data}
if [ ! -s "\$data/PG_VERSION" ]; then
    echo "\${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" >/tmp/pwfile
    # As the postgres image: the socket inside the container trusts, the network needs the
    # password.
    initdb -D "\$data" -U "\${POSTGRES_USER:-postgres}" --pwfile=/tmp/pwfile \\
        --auth-local=trust --auth-host=scram-sha-256 --no-locale -E UTF8 >/dev/null
    rm -f /tmp/pwfile
    echo "host all all all scram-sha-256" >>"\$data/pg_hba.conf"
    # As the postgres image: POSTGRES_DB defaults to the user's name.
    db=\${POSTGRES_DB:-\${POSTGRES_USER:-postgres}}
    if [ "\$db" != postgres ]; then
        echo "CREATE DATABASE \"\$db\"" | postgres --single -D "\$data" postgres >/dev/null
    fi
fi
exec postgres -D "\$data" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "\$@"
SCRIPT
chmod 755 "$root/bin/entrypoint"
# The data folders belong to postgres (a named volume takes the ownership of the folder it
# mounts over); the rest to root.
chown -R 999:999 "$root/var/lib/postgresql" "$root/var/run/postgresql"
tar -C "$root" --numeric-owner -c . | docker import \
    -c "ENV PATH=$pg/bin:/bin" \
    -c 'ENV PGDATA=/var/lib/postgresql/data' \
    -c 'USER postgres' \
    -c 'EXPOSE 5432' \
    -c 'LABEL dev.commandcenter.hub.image=postgres' \
    -c 'ENTRYPOINT ["/bin/entrypoint"]' \
    - "commandcenter-hub/postgres:$major" >/dev/null
echo "built commandcenter-hub/postgres:$major"

# Redis from Debian's package.
root=$work/redis
mkdir -p "$root/data" "$root/tmp"
chmod 1777 "$root/tmp"
copy_with_libs "$root" "$(command -v redis-server)" "$(command -v redis-cli)"
redis_major=$(redis-server --version | sed -E 's/.*v=([0-9]+).*/\1/')
tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/bin' \
    -c 'WORKDIR /data' \
    -c 'EXPOSE 6379' \
    -c 'LABEL dev.commandcenter.hub.image=redis' \
    -c 'CMD ["redis-server", "--protected-mode", "no"]' \
    - "commandcenter-hub/redis:$redis_major" >/dev/null
echo "built commandcenter-hub/redis:$redis_major"
