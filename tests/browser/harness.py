"""What the browser tests share: a real `hub serve` with its own data and project folders
(`Hub`), a page whose console errors and failed requests fail the test (`Watched`), and the
stacks the tests run. The fixtures live in `conftest.py`."""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import time
import urllib.request

import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, expect

REPO = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "browser" / "artifacts"
SCREENSHOTS = REPO / "docs" / "screenshots"
FOUR_SERVICES = (REPO / "tests" / "fixtures" / "four-services.toml").read_text()
NEVER_HEALTHY = """
[hub]
health_timeout = "5m"
stop_grace = "1s"
[services.stuck]
image = "hubtest/busybox:latest"
command = ["/bin/sleep", "600"]
healthcheck = { test = ["CMD", "/bin/false"], interval = "1s", retries = 1000 }
"""
TICKER = """
[hub]
stop_grace = "1s"
[services.ticker]
image = "hubtest/busybox:latest"
command = ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; echo warn $i >&2; sleep 1; done"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hub_binary() -> pathlib.Path:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = pathlib.Path(os.environ.get("HUB_BIN", target / "debug" / "hub"))
    if not binary.exists():
        pytest.fail(f"the hub binary is not built at {binary} (run cargo build -p hub-http)")
    return binary


class Hub:
    """A `hub serve` with its own data, project folders and port range."""

    def __init__(self, root: pathlib.Path, token: str | None = None) -> None:
        self.root = root
        self.projects = root / "projects"
        self.projects.mkdir(parents=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [str(hub_binary()), "serve", "--bind", f"127.0.0.1:{self.port}",
                "--data-dir", str(root / "state"), "--browse-root", str(self.projects)]
        if token:
            args += ["--token", token]
        self.log = open(root / "hub.log", "wb")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{self.base}/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("hub serve did not start")

    def folder(self, name: str, stack: str) -> pathlib.Path:
        folder = self.projects / name
        folder.mkdir()
        (folder / "hub.toml").write_text(stack)
        return folder

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


class Watched:
    """A page whose console errors and failed requests fail the test, unless expected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        self.expected: list[re.Pattern[str]] = []
        page.on("console", self._console)
        page.on("requestfailed", self._failed)
        page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))

    def expect_problem(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self.expected):
            self.problems.append(f"console: {message.text}")

    def _failed(self, request: Request) -> None:
        failure = request.failure or ""
        # Streams the page closes itself (navigation, a log it stops following) end aborted.
        if "ERR_ABORTED" in failure and ("/events" in request.url or "follow=true" in request.url):
            return
        self.problems.append(f"request failed: {request.method} {request.url}: {failure}")

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def card(page: Page, name: str):
    return page.locator("article.card", has=page.locator("a.name", has_text=re.compile(f"^{re.escape(name)}$")))


def add_through_the_browser(page: Page, folder: str) -> None:
    page.get_by_role("button", name="+ Add New Project").click()
    dialog = page.locator("#add-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=f"Select {folder}").click()
    expect(dialog.locator("#add-name")).to_have_value(folder)
    dialog.get_by_role("button", name="Add project").click()
    expect(dialog).to_be_hidden()
