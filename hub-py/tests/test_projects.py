"""Projects and every exception class, from real failing calls, on a real SQLite file."""

from __future__ import annotations

import pathlib
import socket

import pytest

import commandcenter_hub as ch
from conftest import make_folder


def test_create_get_list_update_delete(hub: ch.Hub, tmp_path: pathlib.Path) -> None:
    alpha = hub.create_project("Alpha App", make_folder(tmp_path, "alpha"))
    assert alpha.slug == "alpha-app"
    assert alpha.status == "stopped" and alpha.health == "unknown"
    assert isinstance(alpha.ports, ch.Ports)
    assert hub.get_project(alpha.id) == alpha
    assert hub.get_project("alpha-app") == alpha
    assert "alpha-app" in repr(alpha) and str(alpha.ports.backend) in repr(alpha)

    data = alpha.to_dict()
    assert data["backend_port"] == alpha.ports.backend
    assert data["created_at"].startswith(str(alpha.created_at.year))

    beta = hub.create_project("Beta", make_folder(tmp_path, "beta"))
    assert [p.id for p in hub.list_projects()] == [alpha.id, beta.id]
    assert beta.ports != alpha.ports

    renamed = hub.update_project(alpha.id, name="Gamma")
    assert renamed.slug == "gamma" and renamed.ports == alpha.ports
    moved = hub.update_project("gamma", ports={"backend": alpha.ports.backend + 5000})
    assert moved.ports.backend == alpha.ports.backend + 5000

    assert hub.stats() == ch.Stats(total_projects=2, running=0, stopped=2, errors=0)
    removed = hub.delete_project(beta.id)
    assert removed.id == beta.id
    assert [p.id for p in hub.list_projects()] == [alpha.id]


def test_ports_of_a_deleted_project_are_reused(hub: ch.Hub, tmp_path: pathlib.Path) -> None:
    a = hub.create_project("A", make_folder(tmp_path, "a"))
    b = hub.create_project("B", make_folder(tmp_path, "b"))
    hub.delete_project(a.id)
    c = hub.create_project("C", make_folder(tmp_path, "c"))
    assert c.ports == a.ports and c.ports != b.ports


def test_every_exception_class_from_real_failures(hub: ch.Hub, tmp_path: pathlib.Path) -> None:
    alpha = hub.create_project("Alpha", make_folder(tmp_path, "alpha"))

    with pytest.raises(ch.NotFoundError) as not_found:
        hub.get_project(999)
    assert not_found.value.code == "not_found"
    with pytest.raises(ch.NotFoundError):
        hub.task("00000000-0000-4000-8000-000000000000")

    with pytest.raises(ch.AlreadyExistsError) as exists:
        hub.create_project("Alpha", make_folder(tmp_path, "other"))
    assert exists.value.code == "already_exists" and exists.value.field == "name"

    with pytest.raises(ch.InvalidInputError) as invalid:
        hub.create_project("Missing", tmp_path / "does-not-exist")
    assert invalid.value.field == "path"
    with pytest.raises(ch.InvalidInputError):
        ch.Hub(data_dir=tmp_path / "x", task_backend="carrier-pigeon")

    with pytest.raises(ch.PortConflictError) as conflict:
        hub.create_project("Clash", make_folder(tmp_path, "clash"), ports={"redis": alpha.ports.redis})
    assert conflict.value.code == "port_conflict" and "Alpha" in str(conflict.value)

    with pytest.raises(ch.ForbiddenError):
        hub.browse("/etc", roots=[str(tmp_path)])

    with pytest.raises(ch.BackendUnavailableError) as unavailable:
        # A read-only database that does not exist cannot be opened.
        ch.Hub(database_url=f"sqlite://{tmp_path}/missing/hub.db?mode=ro")
    assert unavailable.value.code == "backend_unavailable"

    # All of them are HubErrors.
    for cls in (ch.NotFoundError, ch.AlreadyExistsError, ch.InvalidInputError, ch.PortConflictError,
                ch.ConflictError, ch.RuntimeUnavailableError, ch.BackendUnavailableError,
                ch.TaskFailedError, ch.ForbiddenError):
        assert issubclass(cls, ch.HubError)
    # Nothing failed was stored.
    assert hub.stats().total_projects == 1


def test_check_ports_names_busy_ports(hub: ch.Hub, tmp_path: pathlib.Path) -> None:
    p = hub.create_project("Busy", make_folder(tmp_path, "busy"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", p.ports.postgres))
        s.listen()
        assert hub.check_ports(p.id) == [ch.BusyPort(role="postgres", port=p.ports.postgres)]
    assert hub.check_ports(p.id) == []


def test_browse_lists_folders_inside_its_roots(hub: ch.Hub, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "browse"
    for name in ("b", "a", ".hidden"):
        make_folder(root, name)
    listing = hub.browse(str(root), roots=[str(root)])
    assert [d["name"] for d in listing["directories"]] == ["a", "b"]


def test_the_hub_reopens_with_everything(tmp_path: pathlib.Path) -> None:
    with ch.Hub(data_dir=tmp_path / "state", project_roots=[tmp_path]) as hub:
        first = hub.create_project("Keep", make_folder(tmp_path, "keep"))
    with ch.Hub(data_dir=tmp_path / "state", project_roots=[tmp_path]) as hub:
        assert hub.get_project("keep") == first


def test_project_folders_must_lie_inside_the_project_roots(hub: ch.Hub, tmp_path: pathlib.Path) -> None:
    for outside in ("/", "/etc", str(tmp_path.parent)):
        with pytest.raises(ch.InvalidInputError) as refused:
            hub.create_project("Outside", outside)
        assert refused.value.field == "path"
    assert hub.list_projects() == []


def test_effective_stack_of_a_compose_project(hub: ch.Hub, tmp_path: pathlib.Path) -> None:
    folder = make_folder(tmp_path, "shop")
    (folder / "compose.yaml").write_text(
        "services:\n"
        "  api:\n"
        "    image: example/api\n"
        "    ports: ['8000:8000']\n"
        "    environment:\n"
        "      MAIL: http://localhost:${MAILHOG_PORT}\n"
        "      LEVEL: ${LEVEL:-info}\n"
        "  mailhog:\n"
        "    image: example/mailhog\n"
        "    ports: ['8025']\n"
    )
    (folder / ".env").write_text("LEVEL=debug\n")
    shop = hub.create_project("Shop", folder)
    stack = hub.effective_stack(shop.id)
    assert stack["format"] == "compose"
    api, mailhog = stack["services"]
    assert api["ports"][0]["role"] == "backend"
    assert api["ports"][0]["host_port"] == shop.ports.backend
    extra = mailhog["ports"][0]
    assert extra["role"] is None and extra["host_port"] not in (None, 8025)
    assert api["environment"] == {"LEVEL": "debug", "MAIL": f"http://localhost:{extra['host_port']}"}
    assert hub.effective_stack("shop") == stack

    (folder / "compose.yaml").write_text("services:\n  api:\n    image: x\n    privileged: true\n")
    with pytest.raises(ch.InvalidInputError) as refused:
        hub.effective_stack(shop.id)
    assert refused.value.field is not None and refused.value.field.endswith("services.api.privileged")
