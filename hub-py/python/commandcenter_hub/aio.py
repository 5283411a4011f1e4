"""The asyncio hub: the same methods as :class:`commandcenter_hub.Hub`, as coroutines.

::

    async with aio.Hub(data_dir="/tmp/hub", project_roots=["/srv"]) as hub:
        project = await hub.create_project("Alpha", "/srv/alpha")
        status = await (await hub.start_project(project.id)).wait()
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Union, Sequence

from ._hub import ProgressCallback, ProjectKey, _args, _open, _task_failed
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

__all__ = ["Hub", "TaskHandle"]


class TaskHandle:
    """A background task, awaited."""

    def __init__(self, hub: "Hub", task_id: str) -> None:
        self._hub = hub
        self.task_id = task_id

    def __repr__(self) -> str:
        return f"aio.TaskHandle({self.task_id!r})"

    async def status(self) -> TaskStatus:
        """The task's current state."""
        return await self._hub.task(self.task_id)

    async def __aiter__(self) -> AsyncIterator[TaskStatus]:
        """Yields the task's state now, then every change, until it is finished."""
        watch = self._hub._native.watch(self.task_id)
        while True:
            raw = await watch.next_async(None)
            if raw is None:  # pragma: no cover - only with a timeout
                continue
            status = TaskStatus._from(json.loads(raw))
            yield status
            if status.ready:
                return

    async def wait(
        self,
        timeout: Optional[float] = None,
        on_progress: Optional[ProgressCallback] = None,
    ) -> TaskStatus:
        """Waits until the task is finished; see :meth:`commandcenter_hub.TaskHandle.wait`."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        watch = self._hub._native.watch(self.task_id)
        last: Optional[TaskStatus] = None
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            raw = await watch.next_async(remaining)
            if raw is None:
                raise TimeoutError(f"task {self.task_id} did not finish within {timeout} s")
            status = TaskStatus._from(json.loads(raw))
            if on_progress is not None and status != last:
                on_progress(status)
            last = status
            if status.ready:
                if status.state == "FAILURE":
                    raise _task_failed(status)
                return status


class Hub:
    """The hub for asyncio code; an async context manager. Opening it blocks briefly.

    ``run_tasks=False`` opens a client beside a running server (see ``commandcenter_hub.Hub``).
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

    async def _call(self, method: str, **args: Any) -> Any:
        return json.loads(await self._native.call_async(method, _args(**args)))

    async def close(self) -> None:
        """Stops the task workers and the database."""
        if not self._closed:
            self._closed = True
            await self._native.close_async()

    async def __aenter__(self) -> "Hub":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def create_project(
        self,
        name: str,
        path: Union[str, "os.PathLike[str]"],
        ports: Optional[Mapping[str, int]] = None,
        host: Optional[str] = None,
    ) -> Project:
        return Project._from(
            await self._call(
                "create_project", name=name, path=path, ports=dict(ports or {}) or None, host=host
            )
        )

    async def get_project(self, id_or_slug: ProjectKey) -> Project:
        return Project._from(await self._call("get_project", key=id_or_slug))

    async def list_projects(self) -> List[Project]:
        return [Project._from(p) for p in await self._call("list_projects")]

    async def update_project(
        self,
        id_or_slug: ProjectKey,
        name: Optional[str] = None,
        path: Optional[Union[str, "os.PathLike[str]"]] = None,
        ports: Optional[Mapping[str, int]] = None,
        host: Optional[str] = None,
    ) -> Project:
        return Project._from(
            await self._call(
                "update_project", key=id_or_slug, name=name, path=path,
                ports=dict(ports) if ports else None,
                host=host,
            )
        )

    async def delete_project(self, id_or_slug: ProjectKey, delete_data: bool = False) -> Project:
        return Project._from(
            await self._call("delete_project", key=id_or_slug, delete_data=delete_data)
        )

    async def stats(self) -> Stats:
        return Stats(**await self._call("stats"))

    async def check_ports(self, id_or_slug: ProjectKey) -> List[BusyPort]:
        return [BusyPort(**p) for p in await self._call("check_ports", key=id_or_slug)]

    async def start_project(self, id_or_slug: ProjectKey) -> TaskHandle:
        return TaskHandle(self, await self._call("start_project", key=id_or_slug))

    async def stop_project(self, id_or_slug: ProjectKey) -> TaskHandle:
        return TaskHandle(self, await self._call("stop_project", key=id_or_slug))

    async def restart_project(self, id_or_slug: ProjectKey) -> TaskHandle:
        return TaskHandle(self, await self._call("restart_project", key=id_or_slug))

    async def restart_service(self, id_or_slug: ProjectKey, service: str) -> TaskHandle:
        return TaskHandle(
            self, await self._call("restart_service", key=id_or_slug, service=service)
        )

    async def project_status(self, id_or_slug: ProjectKey) -> StackStatus:
        return StackStatus._from(await self._call("project_status", key=id_or_slug))

    async def effective_stack(self, id_or_slug: ProjectKey) -> EffectiveStack:
        result: EffectiveStack = await self._call("effective_stack", key=id_or_slug)
        return result

    async def logs(self, id_or_slug: ProjectKey, service: str, lines: int = 100) -> List[str]:
        result: List[str] = await self._call("logs", key=id_or_slug, service=service, lines=lines)
        return result

    async def reconcile(self) -> List[Dict[str, Any]]:
        result: List[Dict[str, Any]] = await self._call("reconcile")
        return result

    async def task(self, task_id: str) -> TaskStatus:
        return TaskStatus._from(await self._call("task", task_id=task_id))

    async def tasks(
        self,
        states: Optional[List[str]] = None,
        kind: Optional[str] = None,
        project_id: Optional[int] = None,
        limit: int = 100,
        offset: int = 0,
    ) -> List[TaskStatus]:
        raw = await self._call(
            "tasks", states=states, kind=kind, project_id=project_id, limit=limit, offset=offset
        )
        return [TaskStatus._from(t) for t in raw]

    async def revoke(self, task_id: str, terminate: bool = False) -> TaskStatus:
        return TaskStatus._from(await self._call("revoke", task_id=task_id, terminate=terminate))

    async def monitoring(self) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._call("monitoring")
        return result

    async def monitor_workers(self) -> WorkersView:
        result: WorkersView = await self._call("monitor_workers")
        return result

    async def monitor_queues(self) -> List[QueueView]:
        result: List[QueueView] = await self._call("monitor_queues")
        return result

    async def monitor_tasks(
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
        return TaskPage._from(await self._call(
            "monitor_tasks", states=states, kind=kind, key=project, worker=worker, search=search,
            sort=sort, ascending=ascending, limit=limit, offset=offset,
        ))

    async def monitor_task(self, task_id: str) -> TaskDetail:
        result: TaskDetail = await self._call("monitor_task", task_id=task_id)
        return result

    async def monitor_stats(self, window: Union[str, float] = "1h") -> WindowStats:
        result: WindowStats = await self._call("monitor_stats", window=str(window))
        return result

    async def monitor_alerts(self) -> List[Alert]:
        result: List[Alert] = await self._call("monitor_alerts")
        return result

    async def browse(
        self, path: Optional[str] = None, roots: Optional[List[str]] = None
    ) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._call("browse", path=path, roots=roots)
        return result
