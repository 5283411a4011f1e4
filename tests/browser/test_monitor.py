"""The Monitor page in headless Chromium against a real `hub serve` and the real Docker engine:
workers, queues, the throughput chart drawn by the page's own code, the alert banner and the
live task list. Its screenshot is the monitoring guide's."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

from playwright.sync_api import expect

from harness import NEVER_HEALTHY, SCREENSHOTS, Hub, Watched


def call(hub: Hub, method: str, path: str, body: object | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{hub.base}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read().decode())


def project(hub: Hub, name: str, stack: str) -> int:
    return int(call(hub, "POST", "/api/projects", {"name": name, "path": str(hub.folder(name, stack))})["id"])


def finish(hub: Hub, task_id: str) -> str:
    for _ in range(600):
        status = call(hub, "GET", f"/api/tasks/{task_id}/status")
        if status["ready"]:
            return str(status["state"])
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish")


def test_the_monitor_page_shows_workers_queues_chart_alerts_and_live_tasks(hub: Hub, page: Watched) -> None:
    tag = uuid.uuid4().hex[:6]
    empties = [project(hub, f"ok{i}-{tag}", "# empty\n") for i in range(3)]
    broken = project(hub, f"broken-{tag}", "[services.x]\nimage = 42\n")
    for pid in empties:
        assert finish(hub, call(hub, "POST", f"/api/orchestration/{pid}/start")["task_id"]) == "SUCCESS"
    assert finish(hub, call(hub, "POST", f"/api/orchestration/{broken}/start")["task_id"]) == "FAILURE"

    p = page.page
    p.goto(hub.base)
    p.get_by_role("link", name="Monitor").click()
    expect(p.locator("h1")).to_have_text("Monitor")

    # One worker, online: the server's own.
    workers = p.locator("#workers tr")
    expect(workers).to_have_count(1)
    expect(workers.first).to_contain_text("online")
    expect(workers.first.locator("td").nth(5)).to_have_text("3")  # succeeded
    expect(workers.first.locator("td").nth(6)).to_have_text("1")  # failed
    expect(p.locator('#queues tr[data-queue="default"]')).to_contain_text("default")
    expect(p.locator('[data-stat="finished"] .value')).to_have_text("4")
    expect(p.locator('[data-stat="failure"] .value')).to_have_text("25 %")

    # The chart: bars of this minute, green for successes and red for the failure.
    chart = p.locator("#throughput-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar-ok")).not_to_have_count(0)
    expect(chart.locator("rect.bar-failed")).not_to_have_count(0)
    expect(chart).to_have_attribute("aria-label", "Tasks finished per minute over the last hour: 4 in all, 1 failed")

    # The banner: 1 of 4 failed is above 10 %, and the broken project is in error.
    expect(p.locator('[data-alert="failure_rate"]')).to_contain_text("1 of 4 tasks failed")
    expect(p.locator('[data-alert="project_error"]')).to_contain_text(f"broken-{tag}")

    # Live: an operation started elsewhere shows up as it happens, and the figures follow.
    stuck = project(hub, f"stuck-{tag}", NEVER_HEALTHY)
    task = call(hub, "POST", f"/api/orchestration/{stuck}/start")["task_id"]
    feed = p.locator("#live-tasks li")
    expect(feed.filter(has_text=task[-8:]).first).to_be_visible()
    expect(p.locator('#queues tr[data-queue="default"] td').nth(2)).to_have_text("1")  # running
    p.screenshot(path=str(SCREENSHOTS / "monitor.png"), full_page=True)
    call(hub, "POST", f"/api/tasks/{task}/revoke?terminate=true")
    expect(feed.filter(has_text="REVOKED").first).to_be_visible()
    expect(p.locator('[data-stat="finished"] .value')).to_have_text("5")

    # A task's page shows the timeline the store kept, and the history finds it by its error.
    p.get_by_role("link", name="Tasks").click()
    p.locator("#filter-search").fill("INVALID TYPE")
    rows = p.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("FAILURE")
    rows.first.locator("a").first.click()
    expect(p.locator("#task-error")).to_contain_text("invalid type")
    timeline = p.locator("#timeline li")
    expect(timeline.first).to_contain_text("queued")
    expect(timeline.last).to_contain_text("FAILURE")
