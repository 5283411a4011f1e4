"""CommandCenter Hub for Python: the hub's engine, imported directly — no server needed.

>>> from commandcenter_hub import Hub
>>> with Hub(data_dir="/tmp/hub", project_roots=["/srv"]) as hub:              # doctest: +SKIP
...     project = hub.create_project("Alpha", "/srv/alpha")
...     hub.start_project(project.id).wait(on_progress=print)

:mod:`commandcenter_hub.aio` has the same surface for asyncio.
"""

from . import aio
from ._hub import Hub, ProjectKey, TaskHandle
from ._native import (
    AlreadyExistsError,
    BackendUnavailableError,
    ConflictError,
    ForbiddenError,
    HubError,
    InvalidInputError,
    NotFoundError,
    PortConflictError,
    RuntimeUnavailableError,
    TaskFailedError,
    __version__,
    slugify,
)
from ._types import (
    Alert,
    BusyPort,
    EffectiveStack,
    Ports,
    Project,
    QueueView,
    ServicePort,
    ServiceStatus,
    StackStatus,
    Stats,
    TaskDetail,
    TaskPage,
    TaskStatus,
    TimelineEntry,
    WindowStats,
    WorkersView,
)

__all__ = [
    "Alert",
    "AlreadyExistsError",
    "BackendUnavailableError",
    "BusyPort",
    "ConflictError",
    "EffectiveStack",
    "ForbiddenError",
    "Hub",
    "HubError",
    "InvalidInputError",
    "NotFoundError",
    "PortConflictError",
    "Ports",
    "Project",
    "ProjectKey",
    "QueueView",
    "RuntimeUnavailableError",
    "ServicePort",
    "ServiceStatus",
    "StackStatus",
    "Stats",
    "TaskDetail",
    "TaskFailedError",
    "TaskHandle",
    "TaskPage",
    "TaskStatus",
    "TimelineEntry",
    "WindowStats",
    "WorkersView",
    "__version__",
    "aio",
    "slugify",
]
