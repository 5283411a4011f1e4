"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright), against a real
`hub serve`, the real Docker engine and the local test images.

Every test fails on a console error or a failed request the page did not expect, and saves
screenshots in `tests/browser/artifacts/`; the README's screenshots are written to
`docs/screenshots/`.
"""

from __future__ import annotations

import pathlib
import urllib.request
import uuid

from playwright.sync_api import Browser, expect

from harness import (
    FOUR_SERVICES, NEVER_HEALTHY, SCREENSHOTS, TICKER, Hub, Watched, add_through_the_browser, card,
)


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
