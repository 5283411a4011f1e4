"""Fixtures: a hub on a temporary folder, project folders with stack files, the `hub` binary."""

from __future__ import annotations

import itertools
import os
import pathlib
import uuid
from typing import Iterator

import pytest

import commandcenter_hub as ch

REPO = pathlib.Path(__file__).resolve().parents[2]
FOUR_SERVICES = (REPO / "tests" / "fixtures" / "four-services.toml").read_text()
STUCK = """
[hub]
health_timeout = "5m"
[services.stuck]
image = "hubtest/busybox:latest"
command = ["/bin/sleep", "600"]
healthcheck = { test = ["CMD", "/bin/false"], interval = "1s", retries = 1000 }
"""

# Each hub gets its own port range, so hubs of different tests never share host ports.
_port_ranges = itertools.count(43000, 200)


def port_bases() -> dict[str, int]:
    base = next(_port_ranges)
    return {"backend": base, "frontend": base + 1, "postgres": base + 2, "redis": base + 3}


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def hub(tmp_path: pathlib.Path) -> Iterator[ch.Hub]:
    with ch.Hub(data_dir=tmp_path / "state", port_bases=port_bases(), project_roots=[tmp_path]) as hub:
        yield hub


def make_folder(root: pathlib.Path, name: str, stack: str | None = None) -> pathlib.Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if stack is not None:
        (folder / "hub.toml").write_text(stack)
    return folder


@pytest.fixture
def hub_binary() -> pathlib.Path:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = pathlib.Path(os.environ.get("HUB_BIN", target / "debug" / "hub"))
    if not binary.exists():
        pytest.fail(f"the hub binary is not built at {binary} (run cargo build -p hub-http)")
    return binary


@pytest.fixture
def redis_url(tmp_path: pathlib.Path) -> Iterator[str]:
    """The test Redis (`HUB_TEST_REDIS_URL`, which the test command starts), with a key prefix
    of this test's own; else a `redis-server` started for the test."""
    url = os.environ.get("HUB_TEST_REDIS_URL")
    if url:
        yield url
        return
    import socket
    import subprocess
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def postgres_url(tmp_path: pathlib.Path) -> Iterator[str]:
    """A database of this test's own on the test PostgreSQL server (`HUB_TEST_POSTGRES_URL`,
    which the test command starts; else a throwaway cluster from scripts/postgres-up.sh)."""
    import subprocess

    server = os.environ.get("HUB_TEST_POSTGRES_URL")
    cluster = None
    if not server:
        import tempfile

        # Not under tmp_path: the server runs as `postgres`, which may not enter root's folders.
        cluster = pathlib.Path(tempfile.mkdtemp(prefix="hub-postgres-"))
        started = subprocess.run(
            ["bash", str(REPO / "scripts" / "postgres-up.sh"), "", str(cluster)],
            check=True, capture_output=True, text=True,
        )
        server = started.stdout.strip().splitlines()[-1]
    name = "hub_py_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", server, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        if cluster is not None:
            as_postgres = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
            pg_ctl = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
            subprocess.run([*as_postgres, str(pg_ctl), "-D", str(cluster / "data"), "-m",
                            "immediate", "stop"], check=False, capture_output=True)
            subprocess.run(["rm", "-rf", str(cluster)], check=False)
