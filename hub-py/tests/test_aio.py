"""The asyncio surface."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess

import pytest

import commandcenter_hub as ch
from commandcenter_hub import aio
from conftest import FOUR_SERVICES, make_folder, port_bases


def test_the_async_hub_runs_a_stack(tmp_path: pathlib.Path, tag: str) -> None:
    async def scenario() -> None:
        async with aio.Hub(
            data_dir=tmp_path / "state", port_bases=port_bases(), project_roots=[tmp_path]
        ) as hub:
            project = await hub.create_project(f"aio-{tag}", make_folder(tmp_path, "aio", FOUR_SERVICES))
            assert (await hub.get_project(project.slug)) == project
            assert len(await hub.list_projects()) == 1
            with pytest.raises(ch.NotFoundError):
                await hub.get_project(12345)

            handle = await hub.start_project(project.id)
            progress: list[int] = []
            # Other coroutines run while the start is awaited.
            ticker_ran = 0

            async def ticker() -> None:
                nonlocal ticker_ran
                while True:
                    ticker_ran += 1
                    await asyncio.sleep(0.01)

            tick = asyncio.create_task(ticker())
            final = await handle.wait(timeout=120, on_progress=lambda s: progress.append(s.progress))
            tick.cancel()
            assert final.state == "SUCCESS"
            assert progress == sorted(progress) and progress[-1] == 100
            assert ticker_ran > 10

            assert (await hub.get_project(project.id)).status == "running"
            assert len((await hub.project_status(project.id)).services) == 4

            stop = await hub.stop_project(project.id)
            states = [s.state async for s in stop]
            assert states[-1] == "SUCCESS"
            assert (await hub.stats()).stopped == 1
            await hub.delete_project(project.id, delete_data=True)

    asyncio.run(scenario())


def test_a_cancelled_delete_still_runs_to_its_end(tmp_path: pathlib.Path, tag: str) -> None:
    """A delete whose awaiting task is cancelled (here by a timeout) still takes the whole
    stack down and unregisters the project: cut between two engine calls, it would leave some
    containers gone and the project registered."""

    async def scenario() -> None:
        async with aio.Hub(
            data_dir=tmp_path / "state", port_bases=port_bases(), project_roots=[tmp_path]
        ) as hub:
            project = await hub.create_project(f"cancel-{tag}", make_folder(tmp_path, "cancel", FOUR_SERVICES))
            assert (await (await hub.start_project(project.id)).wait(timeout=120)).state == "SUCCESS"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(hub.delete_project(project.id, delete_data=True), timeout=0.1)
            for _ in range(600):
                try:
                    await hub.get_project(project.id)
                except ch.NotFoundError:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the project is still registered 60 s after its delete")
            label = f"label=com.docker.compose.project=hub-{project.slug}"
            left = subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True, check=True)
            assert left.stdout.strip() == "", left.stdout

    asyncio.run(scenario())
