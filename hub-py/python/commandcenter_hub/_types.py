"""Typed views of what the hub returns."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, TypedDict

__all__ = [
    "Alert",
    "BusyPort",
    "EffectiveBuild",
    "EffectiveService",
    "EffectiveStack",
    "EffectiveVolume",
    "KindStats",
    "LatencySummary",
    "MinuteCounts",
    "Ports",
    "Project",
    "QueueView",
    "ServicePort",
    "ServiceStatus",
    "StackStatus",
    "Stats",
    "TaskDetail",
    "TaskPage",
    "TaskStatus",
    "TimelineEntry",
    "WindowStats",
    "WorkerView",
    "WorkersView",
]


def _time(value: Optional[str]) -> Optional[_dt.datetime]:
    if value is None:
        return None
    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Ports:
    """The host ports a project holds, one per role."""

    backend: int
    frontend: int
    postgres: int
    redis: int

    def to_dict(self) -> Dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Project:
    """A registered project."""

    id: int
    name: str
    slug: str
    path: str
    ports: Ports
    status: str
    health: str
    last_error: Optional[str]
    created_at: _dt.datetime
    updated_at: _dt.datetime
    last_started: Optional[_dt.datetime]
    last_stopped: Optional[_dt.datetime]
    host: str = "local"

    @classmethod
    def _from(cls, data: Dict[str, Any]) -> "Project":
        created = _time(data["created_at"])
        updated = _time(data["updated_at"])
        if created is None or updated is None:
            # Not an assert: it must hold under `python -O` too.
            raise ValueError(f"project {data.get('id')} has no creation or update time")
        return cls(
            id=data["id"],
            name=data["name"],
            slug=data["slug"],
            path=data["path"],
            ports=Ports(**data["ports"]),
            status=data["status"],
            health=data["health"],
            last_error=data.get("last_error"),
            created_at=created,
            updated_at=updated,
            last_started=_time(data.get("last_started")),
            last_stopped=_time(data.get("last_stopped")),
            host=data.get("host", "local"),
        )

    def to_dict(self) -> Dict[str, Any]:
        """The project as plain data (times in ISO 8601), with the original's flat port fields."""
        out: Dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "slug": self.slug,
            "path": self.path,
            "status": self.status,
            "health": self.health,
            "last_error": self.last_error,
        }
        for role, port in self.ports.to_dict().items():
            out[f"{role}_port"] = port
        for name in ("created_at", "updated_at", "last_started", "last_stopped"):
            value = getattr(self, name)
            out[name] = value.isoformat() if value is not None else None
        return out

    def __repr__(self) -> str:
        p = self.ports
        return (
            f"Project(id={self.id}, slug={self.slug!r}, status={self.status!r}, "
            f"ports=backend:{p.backend} frontend:{p.frontend} postgres:{p.postgres} redis:{p.redis})"
        )


@dataclass(frozen=True)
class Stats:
    """Counts of projects by status."""

    total_projects: int
    running: int
    stopped: int
    errors: int


@dataclass(frozen=True)
class TaskStatus:
    """A task's state, as `GET /api/tasks/{id}/status` gives it."""

    task_id: str
    state: str
    ready: bool
    status: str
    progress: int
    result: Any = None
    error: Optional[str] = None
    error_code: Optional[str] = None
    kind: str = ""
    project_id: Optional[int] = None
    queued_at: Optional[_dt.datetime] = None
    started_at: Optional[_dt.datetime] = None
    finished_at: Optional[_dt.datetime] = None
    attempt: int = 1
    worker: Optional[str] = None

    @classmethod
    def _from(cls, data: Dict[str, Any]) -> "TaskStatus":
        return cls(
            task_id=data["task_id"],
            state=data["state"],
            ready=data["ready"],
            status=data["status"],
            progress=data["progress"],
            result=data.get("result"),
            error=data.get("error"),
            error_code=data.get("error_code"),
            kind=data.get("kind", ""),
            project_id=data.get("project_id"),
            queued_at=_time(data.get("queued_at")),
            started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")),
            attempt=data.get("attempt", 1),
            worker=data.get("worker"),
        )

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class ServicePort(TypedDict):
    """One published port of a service: ``container port → host port``."""

    container_port: int
    protocol: str
    host_ip: str
    #: ``None`` before an extra port is leased for it.
    host_port: Optional[int]
    #: The project port role it uses; ``None`` for an extra port.
    role: Optional[str]
    #: ``"80/tcp → 127.0.0.1:8010"``
    mapping: str


@dataclass(frozen=True)
class ServiceStatus:
    """One service of a stack, as the engine runs it."""

    name: str
    container: str
    image: str
    state: str
    health: Optional[str]
    role: Optional[str]
    host_port: Optional[int]
    target_port: Optional[int]
    ports: List[ServicePort] = field(default_factory=list)


@dataclass(frozen=True)
class StackStatus:
    """A project's stack, as the engine runs it."""

    project_id: int
    status: str
    health: str
    stack_source: str
    services: List[ServiceStatus] = field(default_factory=list)

    @classmethod
    def _from(cls, data: Dict[str, Any]) -> "StackStatus":
        return cls(
            project_id=data["project_id"],
            status=data["status"],
            health=data["health"],
            stack_source=data["stack_source"],
            services=[ServiceStatus(**s) for s in data["services"]],
        )


@dataclass(frozen=True)
class BusyPort:
    """A project's port that something else holds on the host now."""

    role: str
    port: int


class EffectiveBuild(TypedDict):
    """How a service's image is built."""

    context: str
    dockerfile: str
    target: Optional[str]
    args: Dict[str, str]


class EffectiveService(TypedDict):
    """One service as a start would run it."""

    name: str
    container: str
    image: str
    build: Optional[EffectiveBuild]
    entrypoint: Optional[List[str]]
    command: Optional[List[str]]
    ports: List[ServicePort]
    environment: Dict[str, str]
    volumes: List[str]
    depends_on: List[str]
    healthcheck: Optional[str]
    working_dir: Optional[str]
    user: Optional[str]
    restart: Optional[str]
    labels: Dict[str, str]
    aliases: List[str]
    run_once: bool


class EffectiveVolume(TypedDict):
    """A named volume as the engine has it."""

    name: str
    external: bool


class EffectiveStack(TypedDict):
    """The stack a start would run: after interpolation, with the hub's host ports."""

    project_id: int
    project: str
    source: str
    #: ``"compose"``, ``"hub_toml"`` or ``"default"``
    format: str
    network: str
    health_timeout: str
    stop_grace: str
    services: List[EffectiveService]
    volumes: Dict[str, EffectiveVolume]
    warnings: List[str]


# -- monitoring: the core's views as they cross over (see docs/MONITORING.md) ---------------


class WorkerView(TypedDict):
    """One worker: online from its heartbeat, with what it ran."""

    id: str
    name: str
    host: str
    pid: int
    mode: str
    concurrency: int
    queues: List[str]
    started_at: str
    last_heartbeat: str
    online: bool
    active: int
    processed: int
    succeeded: int
    failed: int


class WorkersView(TypedDict):
    """Workers online first, then offline ones until they age out."""

    workers: List[WorkerView]
    online: int
    expire_after_seconds: float


class QueueView(TypedDict):
    """One queue: waiting and running tasks, the oldest wait, its consumers."""

    name: str
    depth: int
    active: int
    oldest_queued_at: Optional[str]
    oldest_wait_seconds: Optional[float]
    consumers: int


class TimelineEntry(TypedDict):
    """One change in a task's life."""

    at: str
    state: str
    progress: int
    status: Optional[str]
    attempt: int
    worker: Optional[str]


class TaskDetail(TypedDict, total=False):
    """A task's status fields (as :class:`TaskStatus` has them, raw), its input and timeline."""

    task_id: str
    state: str
    ready: bool
    status: str
    progress: int
    result: Any
    error: str
    error_code: str
    kind: str
    queue: str
    project_id: Optional[int]
    attempt: int
    worker: Optional[str]
    queued_at: str
    started_at: Optional[str]
    finished_at: Optional[str]
    runtime: Optional[float]
    payload: Any
    queue_wait: Optional[float]
    soft_time_limit: float
    hard_time_limit: float
    timeline: List[TimelineEntry]


class MinuteCounts(TypedDict):
    """Tasks finished in one minute, by outcome."""

    minute: str
    succeeded: int
    failed: int
    revoked: int


class LatencySummary(TypedDict):
    """Nearest-rank percentiles in seconds (``None`` without observations)."""

    count: int
    p50: Optional[float]
    p95: Optional[float]
    max: Optional[float]


class KindStats(TypedDict):
    """One job kind over a window."""

    kind: str
    succeeded: int
    failed: int
    revoked: int
    runtime: LatencySummary
    queue_wait: LatencySummary


class WindowStats(TypedDict):
    """Throughput, outcome rates and latency percentiles over a window."""

    window_seconds: float
    since: str
    until: str
    finished: int
    succeeded: int
    failed: int
    revoked: int
    success_rate: float
    failure_rate: float
    throughput_per_minute: float
    minutes: List[MinuteCounts]
    runtime: LatencySummary
    queue_wait: LatencySummary
    kinds: List[KindStats]


class Alert(TypedDict):
    """One alert the hub's rules raise."""

    kind: str
    severity: str
    subject: Optional[str]
    message: str
    value: float
    threshold: float
    since: Optional[str]


@dataclass(frozen=True)
class TaskPage:
    """One page of the task history, and how many tasks match in all."""

    tasks: List[TaskStatus]
    total: int
    limit: int
    offset: int

    @classmethod
    def _from(cls, data: Dict[str, Any]) -> "TaskPage":
        return cls(
            tasks=[TaskStatus._from(t) for t in data["tasks"]],
            total=data["total"],
            limit=data["limit"],
            offset=data["offset"],
        )
