"""The compose deployment (deploy/compose.yaml) end to end, on the real Docker engine.

The image is built by scripts/build-image.sh (from HUB_BIN, the binary under test), with the
PostgreSQL and Redis stand-ins it builds from this host's packages (no registry is reachable).
The deployment is brought up with docker-compose, driven over HTTP as the original's clients
drive it, a worker container is killed mid-task, and everything is brought down again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
TOKEN = "deploy-test-" + uuid.uuid4().hex
LEASE_SECONDS = 4

# A service that answers HTTP on the backend role's port. No health check: the worker judges it
# ready when its published port answers on the host, which a worker in a container must see.
WEB_STACK = """
[hub]
health_timeout = "60s"
stop_grace = "1s"
[services.backend]
image = "hubtest/busybox:latest"
command = ["/bin/httpd", "-f", "-p", "8000", "-h", "/www"]
publish = { role = "backend", target = 8000 }
"""

# A service that turns healthy 20 s after it starts: a start stays running that long.
SLOW_STACK = """
[hub]
health_timeout = "2m"
stop_grace = "1s"
[services.slow]
image = "hubtest/busybox:latest"
command = ["/bin/sh", "-c", "sleep 20; touch /tmp/ready; exec sleep 600"]
healthcheck = { test = ["CMD", "/bin/ls", "/tmp/ready"], interval = "300ms", retries = 1000 }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """One `docker-compose` project of deploy/compose.yaml."""

    def __init__(self, name: str, port: int, projects: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.projects = projects
        self.env = env
        self.slugs: list[str] = []

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker-compose", "-f", str(COMPOSE_FILE), "-p", self.name, *args],
            env=self.env, check=check, capture_output=True, text=True, timeout=600,
        )

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def project(self, name: str, stack: str) -> dict[str, Any]:
        # Unique per run: a stack left by a failed run never stands in the way.
        name = f"{name}-{uuid.uuid4().hex[:6]}"
        folder = self.projects / name
        folder.mkdir(parents=True)
        (folder / "hub.toml").write_text(stack)
        status, body = self.call("POST", "/api/projects", {"name": name, "path": str(folder)})
        assert status == 201, body
        self.slugs.append(body["slug"])
        return dict(body)

    def remove_stacks(self) -> None:
        """Removes what the projects' stacks left on the engine, whatever the tests did."""
        for slug in self.slugs:
            names = subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"name=^hub-{slug}_"],
                env=self.env, capture_output=True, text=True,
            ).stdout.split()
            if names:
                subprocess.run(["docker", "rm", "-f", *names], env=self.env, capture_output=True)
            subprocess.run(["docker", "network", "rm", f"hub-{slug}"], env=self.env,
                           capture_output=True)

    def operate(self, project: int, op: str) -> str:
        status, body = self.call("POST", f"/api/orchestration/{project}/{op}", {})
        assert status == 202, body
        return str(body["task_id"])

    def wait_task(self, task: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.call("GET", f"/api/tasks/{task}/status")
            assert status == 200, body
            if body["ready"]:
                return dict(body)
            time.sleep(0.2)
        raise AssertionError(f"task {task} did not finish within {timeout} s")

    def container(self, service: str) -> str:
        return f"{self.name}_{service}_1"

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (Debian package docker-compose)")
    binary = os.environ.get("HUB_BIN")
    build = ["bash", str(ROOT / "scripts" / "build-image.sh"), "--with-services",
             "--tag", "commandcenter-hub:deploy-test"]
    if binary:
        build += ["--binary", binary]
    subprocess.run(build, check=True, timeout=1800)

    name = "hubdeploy" + uuid.uuid4().hex[:8]
    projects = tmp_path_factory.mktemp("projects")
    port = free_port()
    env = dict(os.environ)
    env.update({
        "HUB_API_TOKEN": TOKEN,
        "HUB_IMAGE": "commandcenter-hub:deploy-test",
        "HUB_POSTGRES_IMAGE": "commandcenter-hub/postgres:15",
        "HUB_REDIS_IMAGE": "commandcenter-hub/redis:7",
        "HUB_PROJECTS": str(projects),
        "HUB_PORT": str(port),
        "HUB_POSTGRES_PORT": str(free_port()),
        "HUB_REDIS_PORT": str(free_port()),
        "HUB_TASK_LEASE": str(LEASE_SECONDS),
        "HUB_TASK_HEARTBEAT": "1",
    })
    env.setdefault("DOCKER_HOST", "unix:///var/run/docker.sock")
    if env["DOCKER_HOST"].startswith("unix://"):
        env["HUB_DOCKER_SOCKET"] = env["DOCKER_HOST"][len("unix://"):]
    deployment = Deployment(name, port, projects, env)
    deployment.compose("up", "-d")
    try:
        deadline = time.monotonic() + 180
        healthy: set[str] = set()
        services = {"postgres", "redis", "hub", "worker-1", "worker-2"}
        while time.monotonic() < deadline and healthy != services:
            healthy = {
                service for service in services
                if subprocess.run(
                    ["docker", "inspect", "-f", "{{.State.Health.Status}}",
                     deployment.container(service)],
                    env=env, capture_output=True, text=True,
                ).stdout.strip() == "healthy"
            }
            time.sleep(1)
        assert healthy == services, f"not healthy: {services - healthy}\n{deployment.logs()}"
        yield deployment
    finally:
        deployment.remove_stacks()
        down = deployment.compose("down", "-v", "--remove-orphans", check=False)
        assert down.returncode == 0, down.stderr
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={name}"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.split()
        assert left == [], f"containers left running: {left}"
        volumes = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={name}"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.split()
        assert volumes == [], f"volumes left: {volumes}"


def test_every_service_is_healthy_and_the_api_needs_the_token(deployment: Deployment) -> None:
    status, health = deployment.call("GET", "/health")
    assert status == 200 and health["status"] == "healthy", health
    assert (health["database"], health["task_backend"], health["docker"]) == ("ok", "ok", "ok")
    request = urllib.request.Request(f"http://127.0.0.1:{deployment.port}/api/projects")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    status, view = deployment.call("GET", "/api/monitor/workers")
    assert status == 200
    online = sorted(w["name"] for w in view["workers"] if w["online"])
    assert online == ["worker-1", "worker-2"], view


def test_the_original_flow_create_start_poll_running_stop(deployment: Deployment) -> None:
    project = deployment.project("alpha", WEB_STACK)
    pid = project["id"]
    done = deployment.wait_task(deployment.operate(pid, "start"))
    assert done["state"] == "SUCCESS", done
    status, body = deployment.call("GET", f"/api/projects/{pid}")
    assert status == 200 and body["status"] == "running", body
    # The stack runs on the host's engine, published on the project's own port.
    with urllib.request.urlopen(f"http://127.0.0.1:{project['backend_port']}/", timeout=10) as page:
        assert b"hubtest" in page.read()
    done = deployment.wait_task(deployment.operate(pid, "stop"))
    assert done["state"] == "SUCCESS", done
    status, body = deployment.call("GET", f"/api/projects/{pid}")
    assert body["status"] == "stopped", body
    status, body = deployment.call("DELETE", f"/api/projects/{pid}")
    assert status in (200, 204), body


def test_a_worker_killed_mid_task_loses_it_as_the_lease_rules_say(deployment: Deployment) -> None:
    project = deployment.project("slow", SLOW_STACK)
    pid = project["id"]
    task = deployment.operate(pid, "start")
    deadline = time.monotonic() + 60
    holder = None
    while time.monotonic() < deadline:
        _, body = deployment.call("GET", f"/api/tasks/{task}")
        if body.get("state") == "RUNNING" and body.get("worker"):
            holder = body["worker"]
            break
        time.sleep(0.2)
    assert holder, f"the start never ran: {body}"
    service = next(s for s in ("worker-1", "worker-2") if s in holder)
    killed_at = time.monotonic()
    subprocess.run(["docker", "kill", deployment.container(service)], env=deployment.env,
                   check=True, capture_output=True)
    # On the Redis queue a project operation is delivered at least once: once the lease runs
    # out with no heartbeat, the task is taken back and run again, by a live worker.
    done = deployment.wait_task(task, timeout=90)
    took = time.monotonic() - killed_at
    _, record = deployment.call("GET", f"/api/tasks/{task}")
    assert done["state"] == "SUCCESS", done
    assert record["attempt"] == 2, record
    assert record["worker"] != holder, record
    assert took >= LEASE_SECONDS - 1, f"taken back {took:.1f} s after the kill, before the lease ran out"
    status, body = deployment.call("GET", f"/api/projects/{pid}")
    assert body["status"] == "running", body
    # The project is free for the next operation.
    again = deployment.wait_task(deployment.operate(pid, "stop"))
    assert again["state"] == "SUCCESS", again
    status, body = deployment.call("DELETE", f"/api/projects/{pid}")
    assert status in (200, 204), body
