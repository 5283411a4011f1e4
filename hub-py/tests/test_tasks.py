"""Background tasks and real stacks on the Docker engine, through the blocking surface."""

from __future__ import annotations

import _thread
import pathlib
import signal
import threading
import time
import urllib.request

import pytest

import commandcenter_hub as ch
from conftest import FOUR_SERVICES, STUCK, make_folder


def test_start_and_stop_a_stack_with_progress(hub: ch.Hub, tmp_path: pathlib.Path, tag: str) -> None:
    project = hub.create_project(f"py-{tag}", make_folder(tmp_path, "stack", FOUR_SERVICES))
    seen: list[ch.TaskStatus] = []
    handle = hub.start_project(project.id)
    assert isinstance(handle.task_id, str) and handle.status().task_id == handle.task_id
    final = handle.wait(timeout=120, on_progress=seen.append)

    assert final.state == "SUCCESS" and final.ready and final.progress == 100
    progress = [s.progress for s in seen]
    assert progress == sorted(progress), progress
    assert len(set(progress)) >= 4, progress
    assert seen[-1] == final

    running = hub.get_project(project.id)
    assert running.status == "running"
    page = urllib.request.urlopen(f"http://127.0.0.1:{running.ports.backend}/").read()
    assert b"hubtest" in page
    status = hub.project_status(project.id)
    assert {s.name for s in status.services} == {"db", "cache", "backend", "frontend"}
    assert all(s.state == "running" for s in status.services)
    assert any("Ready to accept connections" in line for line in hub.logs(project.id, "cache", 50))

    restart = hub.restart_service(project.id, "backend").wait(timeout=120)
    assert restart.state == "SUCCESS"
    again = hub.restart_project(project.id).wait(timeout=120)
    assert again.state == "SUCCESS" and hub.get_project(project.id).status == "running"
    assert hub.reconcile() == []  # the registry already agrees with the engine
    monitoring = hub.monitoring()
    assert monitoring["backend"] == "in_process"
    # This process is one worker with two slots, named after its Python origin.
    (me,) = [w for w in monitoring["workers"] if w["online"]]
    assert me["concurrency"] == 2 and me["name"] == "python" and me["processed"] >= 2

    stopped = hub.stop_project(project.id).wait(timeout=120)
    assert stopped.state == "SUCCESS"
    assert hub.get_project(project.id).status == "stopped"
    history = hub.tasks(project_id=project.id)
    assert [t.kind for t in history][:4] == [
        "stop_project", "restart_project", "restart_service", "start_project"
    ]
    hub.delete_project(project.id, delete_data=True)


def test_a_failed_task_raises_task_failed_error(hub: ch.Hub, tmp_path: pathlib.Path, tag: str) -> None:
    bad = '[services.web]\nimage = "hubtest/busybox:latest"\npublish = { role = "nope", target = 1 }\n'
    project = hub.create_project(f"bad-{tag}", make_folder(tmp_path, "bad", bad))
    with pytest.raises(ch.TaskFailedError) as failed:
        hub.start_project(project.id).wait(timeout=60)
    assert failed.value.code == "invalid_input"
    assert failed.value.status.state == "FAILURE"
    assert "line 3" in str(failed.value)
    assert hub.get_project(project.id).status == "error"


def test_timeout_revoke_conflict_and_iteration(hub: ch.Hub, tmp_path: pathlib.Path, tag: str) -> None:
    project = hub.create_project(f"stuck-{tag}", make_folder(tmp_path, "stuck", STUCK))
    handle = hub.start_project(project.id)
    with pytest.raises(TimeoutError):
        handle.wait(timeout=1.5)
    with pytest.raises(ch.ConflictError) as conflict:
        hub.start_project(project.id)
    assert conflict.value.code == "conflict"

    hub.revoke(handle.task_id, terminate=True)
    states = [s.state for s in handle]
    assert states[-1] == "REVOKED"
    assert handle.wait(timeout=10).state == "REVOKED"
    assert hub.get_project(project.id).status == "stopped"
    hub.delete_project(project.id, delete_data=True)


def test_threads_keep_running_during_a_blocking_wait(hub: ch.Hub, tmp_path: pathlib.Path, tag: str) -> None:
    project = hub.create_project(f"threads-{tag}", make_folder(tmp_path, "threads", STUCK))
    handle = hub.start_project(project.id)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    worker = threading.Thread(target=count)
    worker.start()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        handle.wait(timeout=2.0)
    elapsed = time.monotonic() - started
    stop.set()
    worker.join()
    # A thread starved by a held interpreter lock would count (almost) nothing.
    assert ticks > 500, f"only {ticks} ticks in {elapsed:.1f} s"
    hub.revoke(handle.task_id, terminate=True)
    handle.wait(timeout=30)
    hub.delete_project(project.id, delete_data=True)


def test_ctrl_c_interrupts_a_wait(hub: ch.Hub, tmp_path: pathlib.Path, tag: str) -> None:
    # A shell starts background commands with SIGINT ignored, and Python keeps it so: then
    # Ctrl-C (and interrupt_main) reach nobody. Python's own handler makes the test mean the
    # same however it was launched.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        project = hub.create_project(f"sigint-{tag}", make_folder(tmp_path, "sigint", STUCK))
        handle = hub.start_project(project.id)
        threading.Timer(0.5, _thread.interrupt_main).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            handle.wait()
        assert time.monotonic() - started < 3
    finally:
        signal.signal(signal.SIGINT, previous)
    hub.revoke(handle.task_id, terminate=True)
    handle.wait(timeout=30)
    hub.delete_project(project.id, delete_data=True)


def test_an_unreachable_engine_raises_runtime_unavailable(tmp_path: pathlib.Path) -> None:
    with ch.Hub(
        data_dir=tmp_path / "state",
        docker_host="unix:///nonexistent/docker.sock",
        project_roots=[tmp_path],
    ) as hub:
        project = hub.create_project("Offline", make_folder(tmp_path, "offline"))
        with pytest.raises(ch.RuntimeUnavailableError) as unavailable:
            hub.project_status(project.id)
        assert "/nonexistent/docker.sock" in str(unavailable.value)
        assert unavailable.value.code == "runtime_unavailable"
        # A start is refused at once, not queued to fail: the project stays as it was.
        with pytest.raises(ch.RuntimeUnavailableError):
            hub.start_project(project.id)
        assert hub.get_project(project.id).status == "stopped"
        assert hub.tasks() == []


def test_an_infinite_timeout_means_no_limit(hub: ch.Hub, tmp_path: pathlib.Path, tag: str) -> None:
    project = hub.create_project(f"inf-{tag}", make_folder(tmp_path, f"inf-{tag}", "# no services\n"))
    handle = hub.start_project(project.id)
    assert handle.wait(timeout=float("inf")).state == "SUCCESS"
    # The compiled watcher itself takes infinity and NaN (no limit) without overflowing.
    for limit in (float("inf"), float("nan"), 1e300):
        raw = hub._native.watch(handle.task_id).next(limit)
        assert raw is not None and '"SUCCESS"' in raw


def test_monitoring_views_from_python(hub: ch.Hub, tmp_path: pathlib.Path, tag: str) -> None:
    ok = hub.create_project(f"ok-{tag}", make_folder(tmp_path, "ok", "# empty\n"))
    broken = hub.create_project(f"broken-{tag}", make_folder(tmp_path, "broken", "[services.x]\nimage = 42\n"))
    assert hub.start_project(ok.id).wait(timeout=60).state == "SUCCESS"
    with pytest.raises(ch.TaskFailedError):
        hub.start_project(broken.id).wait(timeout=60)

    stats = hub.monitor_stats("15m")
    assert (stats["finished"], stats["succeeded"], stats["failed"]) == (2, 1, 1)
    assert stats["failure_rate"] == 0.5 and len(stats["minutes"]) == 16
    (kind,) = stats["kinds"]
    assert kind["kind"] == "start_project" and kind["runtime"]["count"] == 2

    page = hub.monitor_tasks(project=broken.slug, states=["failure"])
    assert page.total == 1 and isinstance(page.tasks[0], ch.TaskStatus)
    failed = page.tasks[0]
    assert failed.state == "FAILURE"
    assert hub.monitor_tasks(search="INVALID TYPE").total == 1
    by_runtime = hub.monitor_tasks(sort="runtime", ascending=True, limit=1)
    assert by_runtime.total == 2 and len(by_runtime.tasks) == 1

    detail = hub.monitor_task(failed.task_id)
    assert detail["timeline"][0]["state"] == "PENDING"
    assert detail["timeline"][-1]["state"] == "FAILURE"
    assert "invalid type" in detail["error"]

    workers = hub.monitor_workers()
    assert workers["online"] == 1 and workers["workers"][0]["failed"] == 1
    (queue,) = hub.monitor_queues()
    assert queue["name"] == "default" and queue["consumers"] == 1
    alerts = [a["kind"] for a in hub.monitor_alerts()]
    assert alerts == ["failure_rate", "project_error"], alerts

    with pytest.raises(ch.InvalidInputError) as bad:
        hub.monitor_stats("2d")
    assert "window" in str(bad.value)
    with pytest.raises(ch.InvalidInputError):
        hub.monitor_tasks(sort="fastest")
    with pytest.raises(ch.NotFoundError):
        hub.monitor_task("00000000-0000-0000-0000-000000000000")
