"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright), against a real
`hub serve`, the real Docker engine and the local test images.

Every test fails on a console error or a failed request the page did not expect, and saves
screenshots in `tests/browser/artifacts/`; the README's screenshots are written to
`docs/screenshots/`.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from typing import Iterator

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright

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


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
    watched = Watched(context.new_page())
    yield watched
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    watched.page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"), full_page=True)
    context.close()
    watched.check()


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


def test_add_start_follow_logs_stop_and_delete(hub: Hub, page: Watched) -> None:
    tag = uuid.uuid4().hex[:6]
    alpha = f"alpha-{tag}"
    hub.folder(alpha, FOUR_SERVICES)
    hub.folder(f"other-{tag}", "# empty\n")
    p = page.page
    p.goto(hub.base)
    expect(p.locator('[data-stat="total"]')).to_have_text("0")

    # Add through the folder browser: enter a folder, go up, select; the name follows.
    p.get_by_role("button", name="+ Add New Project").click()
    dialog = p.locator("#add-dialog")
    dialog.get_by_role("button", name=f"{alpha}/").click()
    expect(dialog.locator("#browse-current")).to_have_text(str(hub.projects / alpha))
    dialog.get_by_role("button", name="Up").click()
    expect(dialog.locator("#browse-current")).to_have_text(str(hub.projects))
    dialog.get_by_role("button", name=f"Select {alpha}").click()
    expect(dialog.locator("#add-name")).to_have_value(alpha)
    dialog.get_by_role("button", name="Add project").click()
    expect(dialog).to_be_hidden()
    expect(card(p, alpha)).to_be_visible()
    expect(p.locator('[data-stat="total"]')).to_have_text("1")

    # The same name for another folder: the error shows next to the name field.
    page.expect_problem(r"409")
    p.get_by_role("button", name="+ Add New Project").click()
    dialog.get_by_role("button", name=f"Select other-{tag}").click()
    dialog.locator("#add-name").fill(alpha)
    dialog.get_by_role("button", name="Add project").click()
    expect(dialog.locator('.field-error[data-field="name"]')).to_contain_text("already")
    dialog.get_by_role("button", name="Cancel").click()

    # Start: the bar reaches 100 and the dot turns green.
    alpha_card = card(p, alpha)
    alpha_card.get_by_role("button", name="Start", exact=True).click()
    bar = alpha_card.get_by_role("progressbar")
    expect(bar).to_be_visible()
    expect(alpha_card.locator('[data-status="green"]')).to_be_visible(timeout=90_000)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(alpha_card.locator(".progress-row")).to_contain_text("SUCCESS")
    expect(p.locator('[data-stat="running"]')).to_have_text("1")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    p.screenshot(path=str(SCREENSHOTS / "dashboard.png"))

    # The project page: services, and a live log with lines arriving.
    alpha_card.locator("a.name").click()
    expect(p.locator("tbody tr", has_text="cache")).to_be_visible()
    expect(p.locator("tbody tr")).to_have_count(4 + 1, timeout=10_000)  # 4 services, 1 operation
    p.locator("#log-service").select_option("cache")
    p.get_by_role("button", name="Follow").click()
    expect(p.locator("#logs .log-line").first).to_be_visible(timeout=10_000)
    p.screenshot(path=str(SCREENSHOTS / "project.png"), full_page=True)
    p.goto(f"{hub.base}/#/")

    # Stop, then delete with its data.
    alpha_card.get_by_role("button", name="Stop", exact=True).click()
    expect(alpha_card.locator('[data-status="grey"]')).to_be_visible(timeout=60_000)
    alpha_card.get_by_role("button", name="Delete").click()
    p.locator("#delete-data").check()
    p.locator("#delete-confirm").click()
    expect(card(p, alpha)).to_have_count(0)
    expect(p.locator('[data-stat="total"]')).to_have_text("0")

    # The task history keeps its operations, filtered by state and kind, each with a timeline.
    p.get_by_role("link", name="Tasks").click()
    rows = p.locator("tbody tr")
    expect(rows.filter(has_text="start_project").first).to_contain_text("SUCCESS")
    expect(rows.filter(has_text="stop_project").first).to_contain_text("SUCCESS")
    p.locator("#filter-kind").select_option("stop_project")
    expect(rows.filter(has_text="start_project")).to_have_count(0)
    p.locator("#filter-state").select_option("SUCCESS")
    expect(rows).to_have_count(1)
    rows.first.locator("a").first.click()
    timeline = p.locator("#timeline li")
    expect(timeline.filter(has_text="queued")).to_have_count(1)
    expect(timeline.filter(has_text="finished")).to_contain_text("SUCCESS")


def test_a_new_log_line_arrives_while_following(hub: Hub, page: Watched) -> None:
    name = f"ticker-{uuid.uuid4().hex[:6]}"
    hub.folder(name, TICKER)
    p = page.page
    p.goto(hub.base)
    add_through_the_browser(p, name)
    card(p, name).get_by_role("button", name="Start", exact=True).click()
    expect(card(p, name).locator('[data-status="green"]')).to_be_visible(timeout=60_000)
    card(p, name).locator("a.name").click()
    p.locator("#log-service").select_option("ticker")
    p.get_by_role("button", name="Follow").click()
    # stdout and stderr interleave in no fixed order.
    expect(p.locator("#logs .log-line.stdout").first).to_contain_text("tick")
    seen = p.locator("#logs .log-line").count()
    # A line written after the page started following shows up.
    expect(p.locator("#logs .log-line")).not_to_have_count(seen, timeout=5_000)
    expect(p.locator("#log-count")).not_to_have_text("0 lines")
    # What the service wrote to stderr is marked as such.
    expect(p.locator("#logs .log-line.stderr").first).to_contain_text("warn")
    expect(p.locator("#logs .log-line.stdout").first).to_contain_text("tick")


def test_two_projects_start_at_once_each_with_its_own_progress(hub: Hub, page: Watched) -> None:
    tag = uuid.uuid4().hex[:6]
    names = [f"one-{tag}", f"two-{tag}"]
    for name in names:
        hub.folder(name, NEVER_HEALTHY)
    p = page.page
    p.goto(hub.base)
    for name in names:
        add_through_the_browser(p, name)
    for name in names:
        card(p, name).get_by_role("button", name="Start", exact=True).click()
    for name in names:
        row = card(p, name).locator(".progress-row")
        expect(row.get_by_role("progressbar")).to_be_visible()
        expect(row.locator(".step")).to_contain_text("Waiting for stuck", timeout=60_000)
        # Actions wait while the operation runs.
        expect(card(p, name).get_by_role("button", name="Delete")).to_be_disabled()
    # Cancel one midway: it ends REVOKED, its stack is cleaned up; the other goes on.
    first = card(p, names[0])
    first.get_by_role("button", name="Cancel").click()
    expect(first.locator(".progress-row")).to_contain_text("REVOKED", timeout=30_000)
    expect(card(p, names[1]).get_by_role("button", name="Cancel")).to_be_visible()
    card(p, names[1]).get_by_role("button", name="Cancel").click()
    expect(card(p, names[1]).locator(".progress-row")).to_contain_text("REVOKED", timeout=30_000)
    # The cancelled start removed what it had created: its service has no container.
    card(p, names[0]).locator("a.name").click()
    expect(p.locator("tbody tr", has_text="stuck")).to_contain_text("missing")
    expect(p.locator("tbody tr", has_text="start_project")).to_contain_text("REVOKED")


def test_a_token_is_asked_once_and_kept_for_the_session(tmp_path: pathlib.Path, browser: Browser) -> None:
    hub = Hub(tmp_path, token="s3cret")
    try:
        context = browser.new_context()
        watched = Watched(context.new_page())
        watched.expect_problem(r"401")
        p = watched.page
        p.goto(hub.base)
        dialog = p.locator("#token-dialog")
        expect(dialog).to_be_visible()
        p.locator("#token-input").fill("s3cret")
        p.get_by_role("button", name="Continue").click()
        expect(p.locator('[data-stat="total"]')).to_have_text("0")
        p.reload()
        expect(p.locator('[data-stat="total"]')).to_have_text("0")
        expect(dialog).to_be_hidden()
        context.close()
        watched.check()
    finally:
        hub.close()


def test_api_clients_still_get_json_and_the_page_has_a_strict_policy(hub: Hub) -> None:
    import json
    with urllib.request.urlopen(hub.base) as response:
        assert json.load(response)["app"] == "CommandCenter Hub"
    request = urllib.request.Request(hub.base, headers={"Accept": "text/html"})
    with urllib.request.urlopen(request) as response:
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        body = response.read().decode()
    assert "http://" not in body and "https://" not in body, "the page loads nothing from elsewhere"
