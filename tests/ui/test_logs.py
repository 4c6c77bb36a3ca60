"""Logging: every line has a level and a component, -log-json, and /v1/agent/monitor streaming."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import time

import pytest

from beacon import logs
from tests.conftest import AgentProcess, wait_until

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(TRACE|DEBUG|INFO|WARN|ERROR)\] +[\w.]+: ")


@pytest.fixture
def clean_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])


def test_text_and_json_lines_carry_level_and_component(clean_logging) -> None:
    out = io.StringIO()
    logs.setup_logging("trace", False, stream=out)
    logging.getLogger("beacon.agent.http").log(logs.TRACE, "hello %s", "there")
    logging.getLogger("beacon.server").warning("careful")
    lines = out.getvalue().splitlines()
    assert TEXT_LINE.match(lines[0]) and lines[0].endswith("[TRACE] agent.http: hello there")
    assert "[WARN]  server: careful" in lines[1]
    out = io.StringIO()
    logs.setup_logging("info", True, stream=out)
    logging.getLogger("beacon.agent").info('quote " and\nnewline')
    logging.getLogger("beacon.agent").debug("not shown")
    (line,) = out.getvalue().splitlines()
    obj = json.loads(line)
    assert obj["@level"] == "info" and obj["@module"] == "agent" and obj["@message"] == 'quote " and\nnewline'


def test_parse_level_accepts_consuls_names() -> None:
    assert logs.parse_level("WARN") == logs.parse_level("warning") == logging.WARNING
    assert logs.parse_level("err") == logging.ERROR and logs.parse_level("trace") == logs.TRACE
    with pytest.raises(ValueError):
        logs.parse_level("loud")


async def test_debug_monitor_lowers_the_root_level_only_while_attached(clean_logging) -> None:
    out = io.StringIO()
    logs.setup_logging("info", False, stream=out)
    log = logging.getLogger("beacon.test")
    assert not log.isEnabledFor(logging.DEBUG)  # an info agent builds no debug records
    sub = logs.BROADCASTER.subscribe(logging.DEBUG, replay=False)
    try:
        log.debug("for the monitor only")
        line = await asyncio.wait_for(sub.get(), 2)
        assert line is not None and line.message == "for the monitor only" and line.component == "test"
        assert "for the monitor only" not in out.getvalue()  # the console keeps its level
    finally:
        sub.close()
    assert not log.isEnabledFor(logging.DEBUG)


async def test_slow_subscriber_drops_and_counts(clean_logging) -> None:
    logs.setup_logging("info", False, stream=io.StringIO())
    sub = logs.BROADCASTER.subscribe(logging.INFO, replay=False, maxsize=3)
    try:
        for i in range(5):
            logging.getLogger("beacon.test").info("line %d", i)
        assert sub.queue.qsize() == 3 and sub.dropped == 2
    finally:
        sub.close()


def _stream(agent: AgentProcess, query: str, until: str, timeout: float = 10.0) -> str:
    """Read /v1/agent/monitor until `until` appears (raw socket: the response never ends by itself)."""
    with socket.create_connection(("127.0.0.1", agent.http_port), timeout=timeout) as sock:
        sock.sendall(f"GET /v1/agent/monitor{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + timeout
        while until.encode() not in data:
            if time.monotonic() > deadline:
                raise AssertionError(f"{until!r} not streamed; got {data[-500:]!r}")
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and until.encode() not in data:
                agent.request("GET", "/v1/status/leader?monitor-probe")
        return data.decode(errors="replace")


def test_monitor_streams_debug_lines_from_an_info_agent(start_agent) -> None:
    agent = start_agent("-log-level", "info")
    text = _stream(agent, "?loglevel=debug", "monitor-probe")
    head, _, body = text.partition("\r\n\r\n")
    assert "200 OK" in head.splitlines()[0] and "text/plain" in head
    probe = [ln for ln in body.splitlines() if "monitor-probe" in ln]
    assert "[DEBUG] agent.http: Request finished: method=GET url=/v1/status/leader?monitor-probe" in probe[0]
    assert any("[INFO]  agent: agent started" in ln for ln in body.splitlines())  # the buffered lines first
    # The console of an info agent never shows the per-request line: nothing on the hot path at info.
    agent.stop()
    assert not any("Request finished" in ln for ln in agent.lines)
    assert any("[INFO]  agent: agent started" in ln for ln in agent.lines)


def test_monitor_json_and_level_errors(start_agent) -> None:
    agent = start_agent("-log-level", "info", "-log-json")
    status, _, body = agent.request("GET", "/v1/agent/monitor?loglevel=shout")
    assert status == 400 and body == b"Unknown log level: shout"
    text = _stream(agent, "?loglevel=debug&logjson", "monitor-probe")
    lines = [ln for ln in text.partition("\r\n\r\n")[2].splitlines() if ln.startswith("{")]
    objs = [json.loads(ln) for ln in lines]
    assert all({"@timestamp", "@level", "@module", "@message"} <= set(o) for o in objs)
    assert any(o["@level"] == "debug" and o["@module"] == "agent.http" for o in objs)
    # -log-json: every log line the agent wrote to its console is JSON with a level and a component.
    agent.stop()
    logged = [ln for ln in agent.lines if not ln.startswith(("==>", "    "))]
    assert logged and all(json.loads(ln)["@module"] for ln in logged)


def test_monitor_info_stream_skips_debug(start_agent) -> None:
    agent = start_agent("-log-level", "debug")
    agent.request("GET", "/v1/status/leader")
    wait_until(lambda: any("Request finished" in ln for ln in agent.lines), timeout=5)  # debug console
    text = _stream(agent, "", "agent started")
    assert "[DEBUG]" not in text


def test_monitor_ends_when_its_client_leaves(start_agent) -> None:
    agent = start_agent("-log-level", "info")
    _stream(agent, "?loglevel=error", "\r\n\r\n")  # connect, read the headers, hang up: no line ever comes

    def finished() -> bool:
        text = agent.request("GET", "/v1/agent/metrics?format=prometheus")[2].decode()
        return 'endpoint="/v1/agent/monitor"' in text

    wait_until(finished, timeout=8, interval=0.2)
