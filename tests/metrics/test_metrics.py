"""`GET /metrics` of a real `hub serve`, read with Prometheus' own text parser
(`prometheus_client`): after a known mix of successes, failures and revokes, its figures match
the monitoring API (`/api/monitor/...`), and the history, stats and counters survive a restart
of the server."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families

REPO = pathlib.Path(__file__).resolve().parents[2]
NEVER_HEALTHY = """
[hub]
health_timeout = "5m"
stop_grace = "1s"
[services.stuck]
image = "hubtest/busybox:latest"
command = ["/bin/sleep", "600"]
healthcheck = { test = ["CMD", "/bin/false"], interval = "1s", retries = 1000 }
"""


def hub_binary() -> str:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return os.environ.get("HUB_BIN", str(target / "debug" / "hub"))


class Server:
    def __init__(self, root: pathlib.Path, *extra: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.base = f"http://127.0.0.1:{self.port}"
        # The server's log (debug level) is kept, and its end shown when it hangs or will not
        # stop: a hang once seen here left nothing else to go on.
        self.log_path = root / f"hub-{self.port}.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [hub_binary(), "serve", "--bind", f"127.0.0.1:{self.port}", "--data-dir",
                 str(root / "state"), "--browse-root", str(root), *extra],
                stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "HUB_LOG": "debug"})
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{self.base}/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("hub serve did not start")

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read().decode()
                return response.status, (json.loads(raw) if raw.startswith(("{", "[")) else raw)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read().decode() or "{}")
        except TimeoutError as err:
            raise AssertionError(f"{method} {path} got no answer in 60 s{self.log_tail()}") from err

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; the server's log ({self.log_path}) ends:\n" + "\n".join(text)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.call("GET", "/metrics")
        assert status == 200, text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def wait(self, task_id: str) -> dict[str, Any]:
        return self.wait_until(task_id, lambda task: task["ready"])

    def wait_until(self, task_id: str, reached: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for _ in range(600):
            _, task = self.call("GET", f"/api/tasks/{task_id}/status")
            if reached(task):
                return task
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} did not get there: {task}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired as err:
            self.process.kill()
            raise AssertionError(f"hub serve did not stop in 60 s{self.log_tail()}") from err


def project(server: Server, root: pathlib.Path, name: str, stack: str) -> int:
    folder = root / name
    folder.mkdir()
    (folder / "hub.toml").write_text(stack)
    status, body = server.call("POST", "/api/projects", {"name": name, "path": str(folder)})
    assert status == 201, body
    return int(body["id"])


def finished(samples: dict, kind: str, state: str) -> float:
    return samples.get(("hub_tasks_finished_total", (("kind", kind), ("state", state))), 0.0)


def test_metrics_match_the_api_after_a_known_mix_and_survive_a_restart(tmp_path: pathlib.Path) -> None:
    tag = uuid.uuid4().hex[:6]
    server = Server(tmp_path)
    try:
        empty = [project(server, tmp_path, f"ok{i}-{tag}", "# empty\n") for i in range(3)]
        broken = project(server, tmp_path, f"broken-{tag}", "[services.x]\nimage = 42\n")
        stuck = project(server, tmp_path, f"stuck-{tag}", NEVER_HEALTHY)
        for pid in empty:
            _, accepted = server.call("POST", f"/api/orchestration/{pid}/start")
            assert server.wait(accepted["task_id"])["state"] == "SUCCESS"
        _, accepted = server.call("POST", f"/api/orchestration/{broken}/start")
        assert server.wait(accepted["task_id"])["state"] == "FAILURE"
        _, accepted = server.call("POST", f"/api/orchestration/{stuck}/start")
        # Revoked once a worker runs it (a task revoked while it waits has no runtime).
        server.wait_until(accepted["task_id"], lambda task: task["state"] != "PENDING")
        server.call("POST", f"/api/tasks/{accepted['task_id']}/revoke?terminate=true")
        assert server.wait(accepted["task_id"])["state"] == "REVOKED"

        samples = server.metrics()
        assert finished(samples, "start_project", "success") == 3
        assert finished(samples, "start_project", "failure") == 1
        assert finished(samples, "start_project", "revoked") == 1
        _, monitoring = server.call("GET", "/api/monitoring")
        kinds = {k["kind"]: k for k in monitoring["kinds"]}
        assert finished(samples, "start_project", "success") == kinds["start_project"]["succeeded"]
        online = sum(1 for w in monitoring["workers"] if w["online"])
        assert samples[("hub_workers_online", ())] == online == 1
        _, stats = server.call("GET", "/api/projects/stats")
        assert samples[("hub_projects", (("status", "running"),))] == stats["running"] == 3
        assert samples[("hub_projects_registered", ())] == stats["total_projects"] == 5
        assert samples[("hub_queue_depth", (("queue", "default"),))] == 0

        # The monitor views say the same as the counters.
        _, window = server.call("GET", "/api/monitor/stats?window=15m")
        assert (window["finished"], window["succeeded"], window["failed"], window["revoked"]) == (5, 3, 1, 1)
        assert window["failure_rate"] == 0.2 and window["success_rate"] == 0.6
        kind = {k["kind"]: k for k in window["kinds"]}["start_project"]
        runtime_count = samples[("hub_task_runtime_seconds_count", (("kind", "start_project"),))]
        assert runtime_count == kind["runtime"]["count"] == 5
        assert samples[("hub_task_runtime_seconds_bucket", (("kind", "start_project"), ("le", "+Inf")))] == 5
        assert samples[("hub_task_queue_wait_seconds_count", (("kind", "start_project"),))] == 5
        assert kind["runtime"]["p50"] <= kind["runtime"]["p95"] <= kind["runtime"]["max"]
        _, workers = server.call("GET", "/api/monitor/workers")
        assert workers["online"] == 1
        assert (workers["workers"][0]["succeeded"], workers["workers"][0]["failed"]) == (3, 1)
        _, queues = server.call("GET", "/api/monitor/queues")
        assert [(q["name"], q["depth"], q["consumers"]) for q in queues["queues"]] == [("default", 0, 1)]
        _, alerts = server.call("GET", "/api/monitor/alerts")
        assert [(a["kind"], a["subject"]) for a in alerts["alerts"]] == [
            ("failure_rate", None), ("project_error", f"broken-{tag}")], alerts
        # HTTP figures by route template and status, never by id.
        starts = samples[("hub_http_requests_total",
                          (("method", "POST"), ("route", "/api/orchestration/{id}/start"), ("status", "202")))]
        assert starts == 5
        assert not any("route" in dict(labels) and str(empty[0]) in dict(labels)["route"]
                       for (_, labels) in samples)
        assert samples[("hub_alerts_firing", (("kind", "failure_rate"),))] == 1
        assert samples[("hub_alerts_firing", (("kind", "task_stuck"),))] == 0
        # Prometheus' own linter finds nothing to say about the names, units and types.
        _, text = server.call("GET", "/metrics")
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr

        for pid in empty:
            _, accepted = server.call("POST", f"/api/orchestration/{pid}/stop")
            server.wait(accepted["task_id"])
        _, failed = server.call("GET", "/api/monitor/tasks?state=FAILURE")
        failed_id = failed["tasks"][0]["task_id"]
    finally:
        server.stop()

    # History lives in the store: a new server reads the same counts.
    again = Server(tmp_path)
    try:
        samples = again.metrics()
        assert finished(samples, "start_project", "success") == 3
        assert finished(samples, "start_project", "failure") == 1
        assert finished(samples, "stop_project", "success") == 3
        assert samples[("hub_task_runtime_seconds_count", (("kind", "start_project"),))] == 5
        _, window = again.call("GET", "/api/monitor/stats?window=1h")
        assert (window["finished"], window["succeeded"], window["failed"], window["revoked"]) == (8, 6, 1, 1)
        _, history = again.call("GET", "/api/monitor/tasks?kind=start_project&sort=runtime&limit=2")
        assert history["total"] == 5 and len(history["tasks"]) == 2
        _, detail = again.call("GET", f"/api/monitor/tasks/{failed_id}")
        assert detail["state"] == "FAILURE" and detail["error"]
        assert [e["state"] for e in detail["timeline"]][0] == "PENDING"
        assert detail["timeline"][-1]["state"] == "FAILURE"
    finally:
        again.stop()


def test_metrics_sit_behind_the_token_unless_made_public(tmp_path: pathlib.Path) -> None:
    guarded = Server(tmp_path / "a", "--token", "s3cret")
    try:
        status, _ = guarded.call("GET", "/metrics")
        assert status == 401
        status, text = guarded.call("GET", "/metrics", token="s3cret")
        assert status == 200 and "hub_workers_online" in text
    finally:
        guarded.stop()
    public = Server(tmp_path / "b", "--token", "s3cret", "--metrics-public")
    try:
        status, text = public.call("GET", "/metrics")
        assert status == 200 and "hub_workers_online" in text
        status, _ = public.call("GET", "/api/projects")
        assert status == 401, "only /metrics is public"
    finally:
        public.stop()
