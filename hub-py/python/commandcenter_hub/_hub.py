"""The blocking hub: every call runs in Rust with the interpreter released."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Union, Sequence

from . import _native
from ._types import (
    Alert,
    BusyPort,
    Project,
    QueueView,
    EffectiveStack,
    StackStatus,
    Stats,
    TaskDetail,
    TaskPage,
    TaskStatus,
    WindowStats,
    WorkersView,
)

ProjectKey = Union[int, str]
"""A project id, or its slug."""

ProgressCallback = Callable[[TaskStatus], None]


def _open(
    data_dir: Optional[Union[str, "os.PathLike[str]"]],
    database_url: Optional[str],
    docker_host: Optional[str],
    task_backend: Optional[str],
    concurrency: int,
    result_expires: Optional[float],
    port_bases: Optional[Mapping[str, int]],
    port_stride: Optional[int],
    run_tasks: bool = True,
    project_roots: Optional[Sequence[Union[str, "os.PathLike[str]"]]] = None,
    task_prefix: Optional[str] = None,
    queues: Optional[Sequence[str]] = None,
) -> "_native.NativeHub":
    """Opens the compiled hub; shared by the blocking and the asyncio surface."""
    settings: Dict[str, Any] = {
        "data_dir": os.fspath(data_dir) if data_dir is not None else None,
        "database_url": database_url,
        "docker_host": docker_host,
        "task_backend": task_backend,
        "concurrency": concurrency,
        "result_expires": result_expires,
        "port_bases": dict(port_bases) if port_bases is not None else None,
        "port_stride": port_stride,
        "run_tasks": run_tasks,
        "task_prefix": task_prefix,
        "queues": list(queues) if queues is not None else None,
        "project_roots": [os.fspath(root) for root in project_roots]
        if project_roots is not None
        else None,
    }
    return _native.NativeHub(json.dumps({k: v for k, v in settings.items() if v is not None}))


def _args(**args: Any) -> str:
    return json.dumps(
        {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in args.items()}
    )


class TaskHandle:
    """A background task: its id, its status, and ways to wait for it."""

    def __init__(self, hub: "Hub", task_id: str) -> None:
        self._hub = hub
        self.task_id = task_id

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.task_id == self.task_id

    def __hash__(self) -> int:
        return hash(self.task_id)

    def status(self) -> TaskStatus:
        """The task's current state."""
        return self._hub.task(self.task_id)

    def __iter__(self) -> Iterator[TaskStatus]:
        """Yields the task's state now, then every change, until it is finished."""
        watch = self._hub._native.watch(self.task_id)
        while True:
            raw = watch.next(None)
            if raw is None:  # pragma: no cover - only with a timeout
                continue
            status = TaskStatus._from(json.loads(raw))
            yield status
            if status.ready:
                return

    def wait(
        self,
        timeout: Optional[float] = None,
        on_progress: Optional[ProgressCallback] = None,
    ) -> TaskStatus:
        """Waits until the task is finished and returns its final state.

        ``on_progress`` is called with every change. Raises ``TaskFailedError`` when the task
        ends in FAILURE and ``TimeoutError`` when ``timeout`` seconds pass first. Other Python
        threads keep running meanwhile, and Ctrl-C interrupts the wait.
        """
        # None and infinity both mean: no limit.
        deadline = None if timeout is None or math.isinf(timeout) else time.monotonic() + timeout
        watch = self._hub._native.watch(self.task_id)
        last: Optional[TaskStatus] = None
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            raw = watch.next(remaining)
            if raw is None:
                raise TimeoutError(
                    f"task {self.task_id} did not finish within {timeout} s"
                    + (f" (last: {last.state} {last.progress}%)" if last else "")
                )
            status = TaskStatus._from(json.loads(raw))
            if on_progress is not None and status != last:
                on_progress(status)
            last = status
            if status.ready:
                if status.state == "FAILURE":
                    raise _task_failed(status)
                return status


def _task_failed(status: TaskStatus) -> "_native.TaskFailedError":
    err = _native.TaskFailedError(f"task {status.task_id} failed: {status.error} ({status.error_code})")
    err.code = status.error_code or "task_failed"
    err.field = None
    err.status = status
    return err


class Hub:
    """The whole hub in this process: registry, ports, background tasks, Docker stacks.

    Use it as a context manager so it shuts down cleanly::

        with Hub(data_dir="/tmp/hub", project_roots=["/srv"]) as hub:
            project = hub.create_project("Alpha", "/srv/alpha")
            hub.start_project(project.id).wait(on_progress=print)

    ``run_tasks`` chooses the process's part when several share one data folder:

    - ``True`` (the default, *embedded*): this process runs the tasks it submits, and any queued
      by clients. Closing it lets running tasks finish within the grace period.
    - ``False`` (*client*): this process only submits and reads; a running ``hub serve`` (or
      ``hub worker``) on the same folder runs the tasks. Use it beside a server: closing a
      client never touches the server's tasks, and its handles follow them all the same.

    ``project_roots`` lists the folders project folders must lie inside; each must exist
    (default: any folder). Set it when paths come from others: the hub often runs beside the
    Docker socket, and a project folder is what containers may reach through bind mounts.

    ``task_backend`` is ``"in_process"`` (the default: tasks live in the hub's database) or a
    Redis URL such as ``"redis://127.0.0.1:6379/0"``, shared with ``hub serve`` and ``hub
    worker`` processes on any host; ``task_prefix`` (default ``"hub:"``) sets what its keys
    start with. ``queues`` limits the queues this process runs tasks from (default: all).
    """

    def __init__(
        self,
        data_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        database_url: Optional[str] = None,
        docker_host: Optional[str] = None,
        task_backend: Optional[str] = None,
        concurrency: int = 2,
        result_expires: Optional[float] = None,
        port_bases: Optional[Mapping[str, int]] = None,
        port_stride: Optional[int] = None,
        run_tasks: bool = True,
        project_roots: Optional[Sequence[Union[str, "os.PathLike[str]"]]] = None,
        task_prefix: Optional[str] = None,
        queues: Optional[Sequence[str]] = None,
    ) -> None:
        self._native = _open(
            data_dir, database_url, docker_host, task_backend, concurrency, result_expires,
            port_bases, port_stride, run_tasks, project_roots, task_prefix, queues,
        )
        self._closed = False

    def _call(self, method: str, **args: Any) -> Any:
        return json.loads(self._native.call(method, _args(**args)))

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the task workers (running tasks get their grace period) and the database."""
        if not self._closed:
            self._closed = True
            self._native.close()

    def __enter__(self) -> "Hub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- projects ----------------------------------------------------------------------------

    def create_project(
        self,
        name: str,
        path: Union[str, "os.PathLike[str]"],
        ports: Optional[Mapping[str, int]] = None,
        host: Optional[str] = None,
    ) -> Project:
        """Registers a project and gives it a set of host ports (or the ``ports`` asked for).

        ``host`` places it on another engine host: its operations go to the queue of that
        name, which that host's ``hub worker --queues <host>`` takes (default ``"local"``).
        """
        return Project._from(
            self._call(
                "create_project", name=name, path=path, ports=dict(ports or {}) or None, host=host
            )
        )

    def get_project(self, id_or_slug: ProjectKey) -> Project:
        """The project with this id or slug; ``NotFoundError`` if there is none."""
        return Project._from(self._call("get_project", key=id_or_slug))

    def list_projects(self) -> List[Project]:
        """Every project, ordered by id."""
        return [Project._from(p) for p in self._call("list_projects")]

    def update_project(
        self,
        id_or_slug: ProjectKey,
        name: Optional[str] = None,
        path: Optional[Union[str, "os.PathLike[str]"]] = None,
        ports: Optional[Mapping[str, int]] = None,
        host: Optional[str] = None,
    ) -> Project:
        """Renames (new slug), moves, re-ports or re-hosts a project (not while it runs)."""
        return Project._from(
            self._call(
                "update_project",
                key=id_or_slug,
                name=name,
                path=path,
                ports=dict(ports) if ports else None,
                host=host,
            )
        )

    def delete_project(self, id_or_slug: ProjectKey, delete_data: bool = False) -> Project:
        """Removes a project, its containers and network; its volumes too with ``delete_data``."""
        return Project._from(self._call("delete_project", key=id_or_slug, delete_data=delete_data))

    def stats(self) -> Stats:
        """Counts of projects by status."""
        return Stats(**self._call("stats"))

    def check_ports(self, id_or_slug: ProjectKey) -> List[BusyPort]:
        """The project's ports that are busy on the host right now."""
        return [BusyPort(**p) for p in self._call("check_ports", key=id_or_slug)]

    # -- stacks ------------------------------------------------------------------------------

    def start_project(self, id_or_slug: ProjectKey) -> TaskHandle:
        """Starts the project's stack in the background."""
        return TaskHandle(self, self._call("start_project", key=id_or_slug))

    def stop_project(self, id_or_slug: ProjectKey) -> TaskHandle:
        """Stops the project's stack (volumes are kept)."""
        return TaskHandle(self, self._call("stop_project", key=id_or_slug))

    def restart_project(self, id_or_slug: ProjectKey) -> TaskHandle:
        """Stops, then starts the project's stack."""
        return TaskHandle(self, self._call("restart_project", key=id_or_slug))

    def restart_service(self, id_or_slug: ProjectKey, service: str) -> TaskHandle:
        """Recreates one service of the project's stack."""
        return TaskHandle(self, self._call("restart_service", key=id_or_slug, service=service))

    def project_status(self, id_or_slug: ProjectKey) -> StackStatus:
        """Per-service state, health and ports, read from the engine."""
        return StackStatus._from(self._call("project_status", key=id_or_slug))

    def effective_stack(self, id_or_slug: ProjectKey) -> EffectiveStack:
        """The stack a start would run: every service after ``${…}`` interpolation, with each
        published port's host port (extra ports of a compose file are leased now if needed)."""
        result: EffectiveStack = self._call("effective_stack", key=id_or_slug)
        return result

    def logs(self, id_or_slug: ProjectKey, service: str, lines: int = 100) -> List[str]:
        """The last ``lines`` lines of one service's output."""
        result: List[str] = self._call("logs", key=id_or_slug, service=service, lines=lines)
        return result

    def reconcile(self) -> List[Dict[str, Any]]:
        """Corrects project statuses from what the engine really runs; returns the changes."""
        result: List[Dict[str, Any]] = self._call("reconcile")
        return result

    # -- tasks -------------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskStatus:
        """A task's state; ``NotFoundError`` for an unknown id (never PENDING)."""
        return TaskStatus._from(self._call("task", task_id=task_id))

    def tasks(
        self,
        states: Optional[List[str]] = None,
        kind: Optional[str] = None,
        project_id: Optional[int] = None,
        limit: int = 100,
        offset: int = 0,
    ) -> List[TaskStatus]:
        """Task history, newest first."""
        raw = self._call(
            "tasks", states=states, kind=kind, project_id=project_id, limit=limit, offset=offset
        )
        return [TaskStatus._from(t) for t in raw]

    def revoke(self, task_id: str, terminate: bool = False) -> TaskStatus:
        """Revokes a task: a pending one never runs; a running one stops with ``terminate``."""
        return TaskStatus._from(self._call("revoke", task_id=task_id, terminate=terminate))

    def monitoring(self) -> Dict[str, Any]:
        """Workers, queues, per-kind history and rates."""
        result: Dict[str, Any] = self._call("monitoring")
        return result

    # -- monitoring (docs/MONITORING.md) ------------------------------------------------------

    def monitor_workers(self) -> WorkersView:
        """Workers: online from their heartbeats; offline ones until they age out."""
        result: WorkersView = self._call("monitor_workers")
        return result

    def monitor_queues(self) -> List[QueueView]:
        """Queues: waiting and running tasks, the oldest wait, the consumers."""
        result: List[QueueView] = self._call("monitor_queues")
        return result

    def monitor_tasks(
        self,
        states: Optional[List[str]] = None,
        kind: Optional[str] = None,
        project: Optional[ProjectKey] = None,
        worker: Optional[str] = None,
        search: Optional[str] = None,
        sort: str = "received",
        ascending: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> TaskPage:
        """One page of the task history — filtered, searched (id, kind, queue, worker, step,
        error), sorted by ``received``, ``started`` or ``runtime`` — and the number matching."""
        return TaskPage._from(self._call(
            "monitor_tasks", states=states, kind=kind, key=project, worker=worker, search=search,
            sort=sort, ascending=ascending, limit=limit, offset=offset,
        ))

    def monitor_task(self, task_id: str) -> TaskDetail:
        """One task with its input and its timeline of changes; ``NotFoundError`` if unknown."""
        result: TaskDetail = self._call("monitor_task", task_id=task_id)
        return result

    def monitor_stats(self, window: Union[str, float] = "1h") -> WindowStats:
        """Throughput, outcome rates and latency percentiles over ``window`` (seconds, or
        ``"15m"``, ``"1h"``…; one minute to 24 hours)."""
        result: WindowStats = self._call("monitor_stats", window=str(window))
        return result

    def monitor_alerts(self) -> List[Alert]:
        """The alerts the hub's rules raise now, most urgent first."""
        result: List[Alert] = self._call("monitor_alerts")
        return result

    # -- folders -----------------------------------------------------------------------------

    def browse(
        self,
        path: Optional[str] = None,
        roots: Optional[List[str]] = None,
    ) -> Dict[str, Any]:
        """Sub-folders of ``path``, confined to ``roots`` (default: your home folder)."""
        result: Dict[str, Any] = self._call("browse", path=path, roots=roots)
        return result
