"""One SQLite file, opened from Rust (`hub serve`) and from Python at once."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import time
import urllib.request

import commandcenter_hub as ch
from conftest import make_folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hub_serve_and_python_see_the_same_projects(tmp_path: pathlib.Path, hub_binary: pathlib.Path) -> None:
    data = tmp_path / "state"
    with ch.Hub(data_dir=data) as hub:
        from_python = hub.create_project("From Python", make_folder(tmp_path, "py"))

    port = free_port()
    server = subprocess.Popen(
        [str(hub_binary), "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/health")
                break
            except OSError:
                time.sleep(0.1)
        listed = json.load(urllib.request.urlopen(f"{base}/api/projects"))
        assert [p["slug"] for p in listed] == ["from-python"]
        assert listed[0]["backend_port"] == from_python.ports.backend

        body = json.dumps({"name": "From HTTP", "path": str(make_folder(tmp_path, "http"))}).encode()
        request = urllib.request.Request(
            f"{base}/api/projects", data=body, headers={"Content-Type": "application/json"}
        )
        created = json.load(urllib.request.urlopen(request))

        # Python opens the same file while the server has it open.
        with ch.Hub(data_dir=data) as hub:
            slugs = [p.slug for p in hub.list_projects()]
            assert slugs == ["from-python", "from-http"]
            assert hub.get_project(created["id"]).ports.backend == created["backend_port"]
    finally:
        server.terminate()
        server.wait(timeout=30)
