"""Pure parts of the engine: parsing, views, events filters, log framing, exported names."""

from __future__ import annotations

import asyncio
import struct

import pytest

import beacon.runtime
from beacon.runtime._errors import InvalidParameter
from beacon.runtime._events import EventBus, EventFilter
from beacon.runtime._logs import LogStore
from beacon.runtime._model import Container, HealthSpec, parse_create, parse_publish, parse_restart


def test_exported_members_are_complete_and_sorted() -> None:
    public = {n for n in dir(beacon.runtime) if not n.startswith("_") and n[0].isupper()}
    assert beacon.runtime.__all__ == sorted(beacon.runtime.__all__)
    assert set(beacon.runtime.__all__) == public


@pytest.mark.parametrize(("spec", "key", "binding"), [
    ("80", "80/tcp", {"HostIp": "", "HostPort": ""}),
    ("8000:80", "80/tcp", {"HostIp": "", "HostPort": "8000"}),
    ("127.0.0.1::80", "80/tcp", {"HostIp": "127.0.0.1", "HostPort": ""}),
    ("127.0.0.1:53:53/udp", "53/udp", {"HostIp": "127.0.0.1", "HostPort": "53"}),
    ("[::1]:8080:80/tcp", "80/tcp", {"HostIp": "::1", "HostPort": "8080"}),
])
def test_publish_specs(spec: str, key: str, binding: dict) -> None:
    assert parse_publish(spec) == (key, binding)


@pytest.mark.parametrize("spec", ["", "abc", "70000", "1:2:3:4", "8000:80/sctp", "x:80", "[::1:80"])
def test_bad_publish_specs(spec: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_publish(spec)


def test_restart_policies() -> None:
    assert parse_restart("on-failure:3") == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert parse_restart("always") == {"Name": "always", "MaximumRetryCount": 0}
    for bad in ("sometimes", "always:3", "on-failure:x"):
        with pytest.raises(InvalidParameter):
            parse_restart(bad)


def test_create_body_round_trips_through_disk_form() -> None:
    spec = parse_create({"Image": "x", "Cmd": ["a"], "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5},
                         "HostConfig": {"PortBindings": {"80": [{"HostPort": "8000"}]}}}, "n")
    assert spec["exposed_ports"] == ["80/tcp"]
    c = Container(id="1" * 64, name="n", created="t", created_unix=0.0, **spec)
    again = Container.from_dict(c.to_dict())
    assert again == c and again.health == HealthSpec(test=["CMD-SHELL", "true"], interval_ns=5)
    assert again.health.argv() == ["/bin/sh", "-c", "true"]


def test_process_env_is_clean_but_has_path() -> None:
    c = Container(id="1" * 64, name="n", image="x", cmd=["a"], created="t", created_unix=0.0, env=["A=1", "B"],
                  hostname="h")
    env = c.process_env()
    assert env["A"] == "1" and env["HOSTNAME"] == "h" and "/usr/bin" in env["PATH"] and "B" not in env


def test_event_filters() -> None:
    bus = EventBus()
    e = bus.emit("container", "health_status: healthy", "ab" * 32, {"name": "web", "image": "i", "team": "x"})
    assert EventFilter({"event": ["health_status"]}).match(e)
    assert EventFilter({"container": ["web"], "label": ["team=x"]}).match(e)
    assert EventFilter({"container": ["abab"]}).match(e)
    assert not EventFilter({"label": ["team=y"]}).match(e)
    assert not EventFilter({"type": ["network"]}).match(e)
    assert e["status"] == e["Action"] and e["from"] == "i"


async def test_event_stream_replays_since_and_stops_at_until() -> None:
    bus = EventBus()
    first = bus.emit("container", "create", "a" * 64, {"name": "a", "image": "i"})
    since = first["timeNano"]
    bus.emit("container", "start", "a" * 64, {"name": "a", "image": "i"})
    got = []
    async with asyncio.timeout(5):
        async for ev in bus.stream(since, since + 200_000_000, EventFilter({})):
            got.append(ev["Action"])
    assert got == ["create", "start"]


async def test_logs_are_framed_split_into_lines_and_followed(tmp_path) -> None:
    store = LogStore(tmp_path / "log.jsonl")
    store.open()
    store.feed(1, b"hello\nwor")
    store.feed(2, b"err\n")
    queue = store.subscribe()
    reader = store.read(follow=True, tail=None, since=None, until=None, streams={1, 2}, running=True, queue=queue)
    got = []
    async with asyncio.timeout(5):
        got.append(await reader.__anext__())
        got.append(await reader.__anext__())
        store.feed(1, b"ld\n")
        got.append(await reader.__anext__())
        store.close()
        assert [r async for r in reader] == []
    assert [(r.stream, r.data) for r in got] == [(1, b"hello\n"), (2, b"err\n"), (1, b"world\n")]
    frame = got[0].frame()
    assert frame[:8] == struct.pack(">BxxxI", 1, 6) and frame[8:] == b"hello\n"
    tail = [r.data async for r in store.read(follow=False, tail=1, since=None, until=None, streams={1},
                                             running=False)]
    assert tail == [b"world\n"]


def _paths(d: dict, prefix: tuple = ()):
    for k, v in d.items():
        yield (*prefix, k)
        if isinstance(v, dict):
            yield from _paths(v, (*prefix, k))


def test_wrongly_typed_create_fields_are_400_not_crashes() -> None:
    import copy

    template = {
        "Image": "x", "Cmd": ["a"], "Entrypoint": None, "Env": ["A=1"], "Labels": {"a": "b"}, "WorkingDir": "/",
        "Hostname": "h", "ExposedPorts": {"80/tcp": {}}, "StopSignal": "TERM", "StopTimeout": 3, "Tty": False,
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1, "Timeout": 1, "Retries": 1, "StartPeriod": 0},
        "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "1"}]}, "PublishAllPorts": False,
                       "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "AutoRemove": False},
    }
    parse_create(template, "ok")
    crashes = []
    for path in _paths(template):
        for value in (None, 0, -5, "x", "", [], {}, [1], ["x"], {"a": 1}, True, 1.5, [None]):
            body = copy.deepcopy(template)
            target = body
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            try:
                parse_create(body, "n")
            except InvalidParameter:
                pass
            except Exception as exc:  # noqa: BLE001 (collecting every crash is the point)
                crashes.append((path, value, repr(exc)))
    assert crashes == []
