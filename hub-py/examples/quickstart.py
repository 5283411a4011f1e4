"""Register a project, start its stack and follow the progress, then stop it.

    python hub-py/examples/quickstart.py /path/to/project-folder

The folder's `hub.toml` (or the default CommandCenter stack) says what runs. Type-checked by
`mypy --strict` in the test command.
"""

from __future__ import annotations

import sys
import tempfile

from commandcenter_hub import Hub, NotFoundError, TaskFailedError, TaskStatus


def show(status: TaskStatus) -> None:
    print(f"{status.state:<10} {status.progress:>3}%  {status.status}")


def main(folder: str) -> int:
    with Hub(data_dir=tempfile.mkdtemp(prefix="hub-quickstart-")) as hub:
        project = hub.create_project("Quickstart", folder)
        print(project)
        try:
            hub.start_project(project.id).wait(timeout=1800, on_progress=show)
        except TaskFailedError as failed:
            print(f"start failed ({failed.code}): {failed}", file=sys.stderr)
            return 1
        for service in hub.project_status(project.id).services:
            print(f"  {service.name:<10} {service.state:<8} port {service.host_port}")
        hub.stop_project(project.id).wait(on_progress=show)
        try:
            hub.get_project("no-such-project")
        except NotFoundError as missing:
            print(f"as expected: {missing.code}")
        hub.delete_project(project.id, delete_data=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
