"""The engine's own floor for benches/stack.rs: the 4-service test stack brought up straight
over the Docker API with no hub code at all, on the critical path a start cannot shorten, at
full parallelism. The network and both volumes at once; the four containers created at once;
db and cache started at once, each probed as soon as its start returns (`redis-cli ping` run in
the container until PONG, as the hub runs a health check right away); backend once both answer,
frontend once backend answers (an HTTP answer on the published port). Prints the seconds it
took, then removes everything.

No orchestrator of this stack on this engine starts it faster: the hub's figure is read
against this one, and the `docker run` script's (scripts/bench-docker-run.sh).

    python3 scripts/bench-engine-floor.py BASE_PORT

Needs a Docker engine on DOCKER_HOST (a unix:// socket; /var/run/docker.sock by default) and
the test images (scripts/docker-up.sh). Python's standard library only.
"""

import http.client
import json
import os
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

API = "/v1.41"


def socket_path():
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        sys.exit(f"DOCKER_HOST={host}: only a unix:// socket is supported")
    return host.removeprefix("unix://")


class EngineConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class Engine:
    """One keep-alive connection per thread, as a client with a pool has."""

    def __init__(self):
        self.path = socket_path()
        self.local = threading.local()

    def call(self, method, path, body=None):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = EngineConnection(self.path)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        conn.request(method, API + path, data, headers)
        response = conn.getresponse()
        raw = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {raw[:300]!r}")
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw


def container(network, alias, image, port, target, command=None, volume=None):
    spec = {
        "Image": image,
        "ExposedPorts": {f"{target}/tcp": {}},
        "HostConfig": {
            "NetworkMode": network,
            "PortBindings": {f"{target}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
        },
        "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": [alias]}}},
    }
    if command:
        spec["Cmd"] = command
    if volume:
        spec["HostConfig"]["Binds"] = [f"{volume}:/data"]
    return spec


def start_stack(engine, pool, name, base):
    """Brings the stack up; returns the seconds it took."""
    network = f"{name}-net"
    began = time.perf_counter()
    prepared = [
        pool.submit(engine.call, "POST", "/networks/create", {"Name": network, "CheckDuplicate": True}),
        pool.submit(engine.call, "POST", "/volumes/create", {"Name": f"{name}-db"}),
        pool.submit(engine.call, "POST", "/volumes/create", {"Name": f"{name}-cache"}),
    ]
    for step in prepared:
        step.result()
    redis = "hubtest/redis:latest"
    busybox = "hubtest/busybox:latest"
    specs = {
        "db": container(network, "db", redis, base + 2, 6379, volume=f"{name}-db"),
        "cache": container(
            network, "cache", redis, base + 3, 6379, volume=f"{name}-cache",
            command=["/usr/bin/redis-server", "--protected-mode", "no", "--dir", "/data",
                     "--appendonly", "yes"],
        ),
        "backend": container(network, "backend", busybox, base, 8000,
                             command=["/bin/httpd", "-f", "-p", "8000", "-h", "/www"]),
        "frontend": container(network, "frontend", busybox, base + 1, 3000,
                              command=["/bin/httpd", "-f", "-p", "3000", "-h", "/www"]),
    }
    created = {
        service: pool.submit(engine.call, "POST", f"/containers/create?name={name}-{service}", spec)
        for service, spec in specs.items()
    }

    def redis_answers(service):
        while True:
            run = engine.call("POST", f"/containers/{name}-{service}/exec",
                              {"Cmd": ["/usr/bin/redis-cli", "ping"], "AttachStdout": True})
            if b"PONG" in engine.call("POST", f"/exec/{run['Id']}/start", {"Detach": False}):
                return
            time.sleep(0.02)

    def http_answers(port):
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    if conn.recv(1):
                        return
            except OSError:
                pass
            time.sleep(0.01)

    def up(service, ready):
        created[service].result()
        engine.call("POST", f"/containers/{name}-{service}/start")
        ready()

    first = [pool.submit(up, "db", lambda: redis_answers("db")),
             pool.submit(up, "cache", lambda: redis_answers("cache"))]
    for service in first:
        service.result()
    up("backend", lambda: http_answers(base))
    up("frontend", lambda: http_answers(base + 1))
    return time.perf_counter() - began


def remove(engine, name):
    for service in ("db", "cache", "backend", "frontend"):
        try:
            engine.call("DELETE", f"/containers/{name}-{service}?force=true")
        except RuntimeError:
            pass
    for path in (f"/networks/{name}-net", f"/volumes/{name}-db", f"/volumes/{name}-cache"):
        try:
            engine.call("DELETE", path)
        except RuntimeError:
            pass


def main():
    base = int(sys.argv[1]) if len(sys.argv) > 1 else 36000
    engine = Engine()
    name = f"benchfloor-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(8) as pool:
        try:
            took = start_stack(engine, pool, name, base)
        finally:
            remove(engine, name)
    print(f"{took:.6f}")


if __name__ == "__main__":
    main()
