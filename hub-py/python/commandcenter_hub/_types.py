"""Typed views of what the hub returns."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["Ports", "Project", "Stats", "TaskStatus", "ServiceStatus", "StackStatus", "BusyPort"]


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
