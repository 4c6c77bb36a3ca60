"""End to end in a real browser: Debian's chromium driven by Playwright against a real agent.

Set BEACON_SCREENSHOTS=1 to refresh docs/screenshots/ (otherwise screenshots go to a temp dir).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, AgentProcess, launch

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = os.environ.get("BEACON_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("chromium not installed (apt-get install chromium)", allow_module_level=True)

expect = sync_api.expect
expect.set_options(timeout=8000)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    a = launch()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30000)
        yield b
        b.close()


@pytest.fixture
def page(browser, agent):
    context = browser.new_context(base_url=agent.http, viewport={"width": 1200, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(8000)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(msg) -> None:
        # A 404 is an answer the UI expects (a key that was just deleted); the browser logs every one.
        if msg.type == "error" and "status of 404" not in msg.text:
            problems.append(f"console {msg.type}: {msg.text}")

    pg.on("console", on_console)
    yield pg
    context.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("BEACON_SCREENSHOTS"):
        out = Path(REPO) / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path_factory.mktemp("screenshots")


def register(agent: AgentProcess, name: str, sid: str, port: int, tags: list[str], check_id: str) -> None:
    agent.json("PUT", "/v1/agent/service/register",
               {"Name": name, "ID": sid, "Port": port, "Tags": tags,
                "Check": {"TTL": "5m", "CheckID": check_id, "Name": f"{sid} heartbeat"}})


def ttl(agent: AgentProcess, verb: str, check_id: str, note: str = "") -> None:
    from urllib.parse import quote

    status, _, body = agent.request("PUT", f"/v1/agent/check/{verb}/{check_id}?note={quote(note)}")
    assert status == 200, body


@pytest.fixture(scope="module", autouse=True)
def services(agent: AgentProcess) -> None:
    register(agent, "web", "web-1", 8080, ["v1", "http"], "web-1-ttl")
    register(agent, "web", "web-2", 8081, ["v1", "http"], "web-2-ttl")
    register(agent, "billing", "billing-1", 9090, ["grpc"], "billing-ttl")
    ttl(agent, "pass", "web-1-ttl", "200 OK in 3ms")
    ttl(agent, "pass", "web-2-ttl", "200 OK in 5ms")
    ttl(agent, "pass", "billing-ttl")
    ttl(agent, "fail", "billing-ttl", "dial tcp 10.0.0.7:5432: connection refused")


def test_service_list_and_a_failing_checks_output(page, agent, shots) -> None:
    page.goto("/")
    expect(page).to_have_url(agent.http + "/ui/services")
    expect(page.locator("h1")).to_have_text("Services")
    rows = page.locator("#services-region tbody tr")
    expect(rows).to_have_count(3)  # billing, consul, web
    expect(page.locator('tr[data-service="billing"]')).to_contain_text("1 critical")
    expect(page.locator('tr[data-service="web"]')).to_contain_text("passing")
    expect(page.locator('tr[data-service="web"]')).not_to_contain_text("critical")
    expect(page.locator('tr[data-service="web"] td.num')).to_have_text("2")
    expect(page.locator('tr[data-service="web"] .tag')).to_have_text(["v1", "http"])
    page.screenshot(path=str(shots / "services.png"), full_page=True)

    page.get_by_role("link", name="billing", exact=True).click()
    expect(page).to_have_url(agent.http + "/ui/services/billing")
    expect(page.locator("h1")).to_be_focused()
    check = page.locator('tr[data-check="billing-ttl"]')
    expect(check).to_contain_text("critical")
    expect(check.locator("pre.output")).to_have_text("dial tcp 10.0.0.7:5432: connection refused")
    expect(page.locator('[data-instance="billing-1"]')).to_contain_text("127.0.0.1:9090")
    page.screenshot(path=str(shots / "service.png"), full_page=True)


def test_changes_appear_without_a_reload(page, agent) -> None:
    page.goto("/ui/services")
    expect(page.locator('tr[data-service="web"]')).to_be_visible()
    page.evaluate("window.__sameDocument = 'yes'")
    register(agent, "cache", "cache-1", 6379, ["redis"], "cache-ttl")
    expect(page.locator('tr[data-service="cache"]')).to_contain_text("1 critical")
    ttl(agent, "pass", "cache-ttl", "PONG")
    expect(page.locator('tr[data-service="cache"]')).not_to_contain_text("critical")
    agent.json("PUT", "/v1/agent/service/deregister/cache-1")
    expect(page.locator('tr[data-service="cache"]')).to_have_count(0)
    assert page.evaluate("window.__sameDocument") == "yes"  # same page: live, not reloaded


def test_kv_browse_edit_create_delete(page, agent, shots) -> None:
    assert agent.request("PUT", "/v1/kv/config/app/color", b"blue")[0] == 200
    assert agent.request("PUT", "/v1/kv/config/app/size", b"10")[0] == 200
    assert agent.request("PUT", "/v1/kv/config/db/url", b"postgres://db")[0] == 200
    page.goto("/ui/kv/")
    page.get_by_role("link", name="config/").click()
    page.get_by_role("link", name="app/").click()
    expect(page).to_have_url(agent.http + "/ui/kv/config/app/")
    page.screenshot(path=str(shots / "kv-folder.png"), full_page=True)
    page.get_by_role("link", name="color").click()
    value = page.get_by_label("Value")
    expect(value).to_have_value("blue")
    value.fill("green")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#kv-status")).to_have_text("Saved.")
    assert agent.request("GET", "/v1/kv/config/app/color?raw")[2] == b"green"
    # A change made elsewhere shows up in the open editor.
    agent.request("PUT", "/v1/kv/config/app/color", b"red")
    expect(value).to_have_value("red")
    page.screenshot(path=str(shots / "kv-key.png"), full_page=True)

    # Delete, confirmed in a dialog: back to the folder, gone from the API.
    page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("config/app/color")
    dialog.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(agent.http + "/ui/kv/config/app/")
    assert agent.request("GET", "/v1/kv/config/app/color")[0] == 404
    expect(page.locator('tr[data-key-row="config/app/color"]')).to_have_count(0)

    # Create a key in this folder, and a folder.
    page.get_by_label("Key or folder name").fill("feature")
    page.locator("#kv-new-value").fill("on")
    page.get_by_role("button", name="Create").click()
    expect(page.locator('tr[data-key-row="config/app/feature"]')).to_be_visible()
    assert agent.request("GET", "/v1/kv/config/app/feature?raw")[2] == b"on"
    page.get_by_label("Key or folder name").fill("feature")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").filter(has_text="already exists")).to_be_visible()
    page.get_by_label("Key or folder name").fill("nested/")
    page.get_by_role("button", name="Create").click()
    expect(page.locator('tr[data-key-row="config/app/nested/"]')).to_contain_text("Folder")


def test_keyboard_only_navigation_to_a_nodes_checks(page, agent, shots) -> None:
    node = agent.json("GET", "/v1/agent/self")["Config"]["NodeName"]
    page.goto("/ui/services")
    expect(page.locator("#services-region tbody tr").first).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to main content")
    for _ in range(10):  # bounded: walk the header with Tab until the Nodes link
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Nodes":
            break
    expect(page.locator(":focus")).to_have_text("Nodes")
    page.keyboard.press("Enter")
    expect(page).to_have_url(agent.http + "/ui/nodes")
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    expect(page.get_by_role("link", name="Nodes")).to_have_attribute("aria-current", "page")
    row = page.locator(f'tr[data-node="{node}"]')
    expect(row).to_contain_text("web-1")
    page.screenshot(path=str(shots / "nodes.png"), full_page=True)
    link = row.get_by_role("link", name=node)
    link.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(agent.http + f"/ui/nodes/{node}")
    expect(page.locator('tr[data-check="serfHealth"]')).to_contain_text("passing")
    expect(page.locator('tr[data-check="billing-ttl"]')).to_contain_text("connection refused")
    page.screenshot(path=str(shots / "node.png"), full_page=True)
    page.go_back()
    expect(page).to_have_url(agent.http + "/ui/nodes")


def test_servers_and_leader(page, agent, shots) -> None:
    leader = json.loads(agent.request("GET", "/v1/status/leader")[2])
    page.goto("/ui/servers")
    expect(page.locator("#leader-address")).to_contain_text(leader)
    expect(page.locator("#raft-servers tbody tr")).to_have_count(1)
    expect(page.locator("#raft-servers tbody tr")).to_contain_text("leader")
    expect(page.locator("#members tbody tr")).to_contain_text("alive")
    page.screenshot(path=str(shots / "servers.png"), full_page=True)


def test_logs_page_streams_the_agents_log(page, agent, shots) -> None:
    page.goto("/ui/logs?level=debug")
    expect(page.get_by_role("status").filter(has_text="Streaming")).to_have_text("Streaming at debug and above")
    agent.request("GET", "/v1/status/leader?ui-log-probe")
    expect(page.locator("#log-lines")).to_contain_text("url=/v1/status/leader?ui-log-probe")
    page.screenshot(path=str(shots / "logs.png"), full_page=True)
    page.get_by_label("Level").select_option("warn")
    expect(page.get_by_role("status").filter(has_text="Streaming")).to_have_text("Streaming at warn and above")
    expect(page).to_have_url(agent.http + "/ui/logs?level=warn")


@pytest.mark.parametrize("path", ["/ui/services", "/ui/services/billing", "/ui/nodes", "/ui/nodes/{node}",
                                  "/ui/kv/", "/ui/kv/a11y/key", "/ui/servers", "/ui/logs"])
def test_pages_pass_axe_accessibility_rules(page, agent, path) -> None:
    axe_mod = pytest.importorskip("axe_playwright_python.sync_playwright",
                                  reason="pip install axe-playwright-python")
    node = agent.json("GET", "/v1/agent/self")["Config"]["NodeName"]
    agent.request("PUT", "/v1/kv/a11y/key", b"value")
    page.goto(path.format(node=node))
    expect(page.locator("main h1")).to_be_visible()
    if page.locator("main .region").count():
        expect(page.locator("main .region").first).not_to_contain_text("Loading")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        results = axe_mod.Axe().run(page, options={"runOnly": {"type": "tag",
                                                               "values": ["wcag2a", "wcag2aa", "wcag21aa"]}})
        assert results.violations_count == 0, f"{scheme}: {results.generate_report()}"
