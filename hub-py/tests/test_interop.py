"""One SQLite file, opened from Rust (`hub serve`) and from Python at once."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import commandcenter_hub as ch
from conftest import STUCK, make_folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hub_serve_and_python_see_the_same_projects(tmp_path: pathlib.Path, hub_binary: pathlib.Path) -> None:
    data = tmp_path / "state"
    with ch.Hub(data_dir=data, project_roots=[tmp_path]) as hub:
        from_python = hub.create_project("From Python", make_folder(tmp_path, "py"))

    server, base = _serve(hub_binary, data)
    try:
        listed = json.load(urllib.request.urlopen(f"{base}/api/projects"))
        assert [p["slug"] for p in listed] == ["from-python"]
        assert listed[0]["backend_port"] == from_python.ports.backend

        body = json.dumps({"name": "From HTTP", "path": str(make_folder(tmp_path, "http"))}).encode()
        request = urllib.request.Request(
            f"{base}/api/projects", data=body, headers={"Content-Type": "application/json"}
        )
        created = json.load(urllib.request.urlopen(request))

        # Python opens the same file while the server has it open.
        with ch.Hub(data_dir=data, project_roots=[tmp_path]) as hub:
            slugs = [p.slug for p in hub.list_projects()]
            assert slugs == ["from-python", "from-http"]
            assert hub.get_project(created["id"]).ports.backend == created["backend_port"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _get(base: str, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{base}{path}") as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _post(base: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _serve(
    hub_binary: pathlib.Path, data: pathlib.Path, *extra: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`hub serve` on a free port with its state in `data` (and `extra` flags), once healthy."""
    port = free_port()
    server = subprocess.Popen(
        [str(hub_binary), "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", str(data),
         "--project-root", str(data.parent), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/health")
            break
        except OSError:
            time.sleep(0.1)
    return server, base


def test_a_python_hub_opened_beside_the_server_leaves_its_running_task_alone(
    tmp_path: pathlib.Path, hub_binary: pathlib.Path, tag: str
) -> None:
    """The four steps of the reproduction: a server runs a start that waits on a health check;
    Python opens and closes a hub on the same folder, in either mode; the server's task stays
    running, one truth for all, and its project still refuses a second operation."""
    data = tmp_path / "state"
    server, base = _serve(hub_binary, data)
    try:
        folder = make_folder(tmp_path, f"stuck-{tag}", STUCK)
        status, project = _post(base, "/api/projects", {"name": f"stuck-{tag}", "path": str(folder)})
        assert status == 201, project
        status, accepted = _post(base, f"/api/orchestration/{project['id']}/start", {})
        assert status == 202, accepted
        task_id = accepted["task_id"]
        for _ in range(600):
            _, task = _get(base, f"/api/tasks/{task_id}/status")
            if task["state"] == "RUNNING":
                break
            time.sleep(0.1)
        assert task["state"] == "RUNNING", task

        for run_tasks in (True, False):
            with ch.Hub(data_dir=data, run_tasks=run_tasks, project_roots=[tmp_path]) as hub:
                # One truth: Python reads what the server runs.
                assert hub.task(task_id).state == "RUNNING"
                with pytest.raises(ch.ConflictError):
                    hub.stop_project(project["id"])
            _, after = _get(base, f"/api/tasks/{task_id}/status")
            assert after["state"] == "RUNNING", after
            status, body = _post(base, f"/api/orchestration/{project['id']}/stop", {})
            assert status == 409, body

        # A client handle follows the server's task to its end.
        with ch.Hub(data_dir=data, run_tasks=False) as client:
            _post(base, f"/api/tasks/{task_id}/revoke?terminate=true", {})
            final = client.task(task_id)
            for _ in range(300):
                final = client.task(task_id)
                if final.ready:
                    break
                time.sleep(0.1)
            assert final.state == "REVOKED"
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_python_client_on_redis_submits_and_a_hub_worker_runs(
    tmp_path: pathlib.Path, hub_binary: pathlib.Path, redis_url: str, tag: str
) -> None:
    """Python and `hub worker` share one Redis (under a prefix of this test's own) and one
    registry file: Python submits and follows, the worker runs, both see one record."""
    data = tmp_path / "state"
    prefix = f"py-{tag}:"
    worker = subprocess.Popen(
        [str(hub_binary), "worker", "--data-dir", str(data), "--task-backend", redis_url,
         "--task-prefix", prefix, "--worker-name", "pyworker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with ch.Hub(
            data_dir=data, task_backend=redis_url, task_prefix=prefix, run_tasks=False,
            project_roots=[tmp_path],
        ) as hub:
            project = hub.create_project(f"redis-{tag}", make_folder(tmp_path, f"r-{tag}", "# empty\n"))
            assert project.host == "local"
            seen: list[str] = []
            done = hub.start_project(project.id).wait(timeout=60, on_progress=lambda s: seen.append(s.state))
            assert done.state == "SUCCESS", done
            assert done.worker is not None and done.worker.startswith("pyworker@"), done
            assert seen[-1] == "SUCCESS"
            assert hub.get_project(project.id).status == "running"
            with pytest.raises(ch.InvalidInputError):
                ch.Hub(data_dir=data, task_backend="rediss://nope", run_tasks=False)
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0


def test_python_and_hub_serve_share_one_postgres_registry(
    tmp_path: pathlib.Path, hub_binary: pathlib.Path, postgres_url: str
) -> None:
    """A Python `Hub` and `hub serve` on one PostgreSQL database, each with a data folder of its
    own: one registry, and no port handed out twice."""
    with ch.Hub(data_dir=tmp_path / "py-state", database_url=postgres_url,
                project_roots=[tmp_path]) as hub:
        from_python = hub.create_project("From Python", make_folder(tmp_path, "py"))

    server, base = _serve(hub_binary, tmp_path / "serve-state", "--database-url", postgres_url)
    try:
        status, created = _post(base, "/api/projects",
                                {"name": "From HTTP", "path": str(make_folder(tmp_path, "http"))})
        assert status == 201, created
        with ch.Hub(data_dir=tmp_path / "py-state", database_url=postgres_url,
                    project_roots=[tmp_path]) as hub:
            projects = hub.list_projects()
            assert [p.slug for p in projects] == ["from-python", "from-http"]
            ports = [port for p in projects for port in (p.ports.backend, p.ports.frontend,
                                                         p.ports.postgres, p.ports.redis)]
            assert len(set(ports)) == 8, ports
            assert hub.get_project(created["id"]).ports.backend == created["backend_port"]
            assert projects[0].ports == from_python.ports
    finally:
        server.terminate()
        server.wait(timeout=30)
