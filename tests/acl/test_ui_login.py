"""The UI under ACLs with default_policy deny: it asks for a token when a request is denied, works with
one (kept in the tab's session), and forgets it on "Log out". Headless Chromium via Playwright."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import AgentProcess, launch

pytestmark = pytest.mark.integration
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = os.environ.get("BEACON_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("chromium not installed (apt-get install chromium)", allow_module_level=True)

expect = sync_api.expect
MGMT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Iterator[AgentProcess]:
    cfg = tmp_path_factory.mktemp("ui-acl") / "acl.json"
    cfg.write_text(json.dumps({"acl": {"enabled": True, "default_policy": "deny",
                                       "tokens": {"initial_management": MGMT}}}))
    a = launch("-config-file", str(cfg))
    status, _, _ = a.request("PUT", f"/v1/kv/ui-secret/color?token={MGMT}", b"blue")
    assert status == 200
    yield a
    a.stop()


def test_login_prompt_then_browsing_with_a_token(agent) -> None:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30000)
        try:
            context = browser.new_context(base_url=agent.http)
            page = context.new_page()
            page.set_default_timeout(10000)
            page.goto("/ui/kv/")
            expect(page.get_by_role("heading", name="Log in")).to_be_visible(timeout=10000)
            expect(page.get_by_role("link", name="ui-secret/")).to_have_count(0)
            page.get_by_label("ACL token (SecretID)").fill(MGMT)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("link", name="ui-secret/")).to_be_visible(timeout=10000)
            # The token stays for this tab's session: a reload still works without asking.
            page.reload()
            expect(page.get_by_role("link", name="ui-secret/")).to_be_visible(timeout=10000)
            expect(page.get_by_role("heading", name="Log in")).to_have_count(0)
            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_role("heading", name="Log in")).to_be_visible(timeout=10000)
            # A new tab context has no token either.
            other = browser.new_context(base_url=agent.http).new_page()
            other.goto("/ui/services")
            expect(other.get_by_role("heading", name="Log in")).to_be_visible(timeout=10000)
        finally:
            browser.close()
