"""Alias checks against a fake AliasSource (what the agent's local state will provide)."""

import asyncio

import pytest

from beacon.checks import CheckDefinition, CheckScheduler, alias_result
from beacon.model import HealthCheck


class FakeSource:
    def __init__(self):
        self.checks: dict[str, HealthCheck] = {}
        self.services = {"web"}
        self.watchers = []

    def alias_checks(self, node, service_id):
        if service_id and service_id not in self.services:
            return None
        return list(self.checks.values())

    def alias_watch(self, node, service_id, wake):
        self.watchers.append(wake)
        return lambda: self.watchers.remove(wake)

    def set(self, check_id, status, *, service_id="web", output="", node="n1"):
        self.checks[check_id] = HealthCheck(node=node, check_id=check_id, name=check_id, status=status,
                                            service_id=service_id, output=output)
        for wake in list(self.watchers):
            wake()


def hc(check_id, status, service_id="", node="n1", output=""):
    return HealthCheck(node=node, check_id=check_id, name=check_id, status=status, service_id=service_id,
                       output=output)


def test_alias_result_follows_consul_rules():
    assert alias_result([], node=None, service_id="web") == ("passing", "No checks found.")
    assert alias_result([hc("a", "passing", "web")], node=None, service_id="web") == (
        "passing", "All checks passing.")
    checks = [hc("a", "warning", "web", output="slow"), hc("b", "passing", "web"), hc("other", "critical", "db")]
    assert alias_result(checks, node=None, service_id="web") == ("warning", 'Aliased check "a" failing: slow')
    checks.append(hc("node-disk", "critical", "", output="full"))  # node-level checks count too
    assert alias_result(checks, node=None, service_id="web") == (
        "critical", 'Aliased check "node-disk" failing: full')
    assert alias_result([hc("a", "critical", "web", node="n2")], node="n1", service_id="web")[0] == "passing"
    assert alias_result(None, node="n1", service_id="web") == (
        "critical", "Service web could not be found on node n1")
    # a node alias looks at node-level checks only
    assert alias_result([hc("a", "critical", "web")], node="n1", service_id=None)[0] == "passing"
    # an alias never sees its own status
    assert alias_result([hc("me", "critical")], node=None, service_id=None, own_check_id="me")[0] == "passing"


async def test_alias_check_mirrors_service_health_on_change(recorder):
    source = FakeSource()
    source.set("service:web", "passing")
    sched = CheckScheduler(recorder, alias_source=source)
    try:
        sched.add(CheckDefinition.from_json({"ID": "alias", "Name": "alias", "AliasService": "web",
                                             "ServiceID": "sidecar"}))
        await recorder.wait_status("alias", "passing")
        source.set("service:web", "critical", output="down")
        got = await recorder.wait_status("alias", "critical")
        assert got.output == 'Aliased check "service:web" failing: down'
        source.set("unrelated", "critical", service_id="db")  # wakes, verdict unchanged: no report
        source.set("service:web", "passing")
        await recorder.wait_status("alias", "passing", after=2)
        assert [u.status for u in recorder.of("alias")] == ["passing", "critical", "passing"]
        source.services.discard("web")
        source.set("x", "passing", service_id="db")
        got = await recorder.wait_status("alias", "critical", after=3)
        assert "could not be found" in got.output
    finally:
        async with asyncio.timeout(5):
            await sched.stop()
    assert source.watchers == []  # the watch is released when the check stops


async def test_alias_check_can_be_replaced_and_removed(recorder):
    source = FakeSource()
    sched = CheckScheduler(recorder, alias_source=source)
    try:
        sched.add(CheckDefinition.from_json({"ID": "alias", "AliasService": "web"}))
        await recorder.wait_status("alias", "passing")
        sched.add(CheckDefinition.from_json({"ID": "alias", "AliasService": "web"}))
        await recorder.wait_until(lambda: len(source.watchers) == 1)
        sched.remove("alias")
        await asyncio.sleep(0)  # let the cancelled runner unwind
        await asyncio.sleep(0)
        assert source.watchers == []
    finally:
        async with asyncio.timeout(5):
            await sched.stop()


@pytest.mark.parametrize("status", ["warning", "critical"])
async def test_node_alias_reports_node_level_failures(recorder, status):
    source = FakeSource()
    sched = CheckScheduler(recorder, alias_source=source)
    try:
        sched.add(CheckDefinition.from_json({"ID": "n", "AliasNode": "n1"}))
        await recorder.wait_status("n", "passing")
        source.set("serfHealth", status, service_id="")
        await recorder.wait_status("n", status)
    finally:
        async with asyncio.timeout(5):
            await sched.stop()
