"""Fixtures of the browser tests: Debian's Chromium (Playwright with its executable), a fresh
`hub serve` per test, and a watched page that saves its last view."""

from __future__ import annotations

import pathlib
import shutil
import urllib.request
from typing import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from harness import ARTIFACTS, Hub, Watched


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def hub(tmp_path: pathlib.Path) -> Iterator[Hub]:
    hub = Hub(tmp_path)
    yield hub
    # Whatever a failed test left running goes with its projects.
    try:
        import json
        projects = json.load(urllib.request.urlopen(f"{hub.base}/api/projects"))
        for project in projects:
            request = urllib.request.Request(
                f"{hub.base}/api/projects/{project['id']}?delete_data=true", method="DELETE")
            try:
                urllib.request.urlopen(request)
            except OSError:
                pass
    finally:
        hub.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
    watched = Watched(context.new_page())
    yield watched
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    watched.page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"), full_page=True)
    context.close()
    watched.check()
