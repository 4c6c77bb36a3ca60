"""`beacon keyring`, `beacon rtt` and `beacon event` against real agents."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import re

from beacon.cli.main import main as beacon_main
from tests.conftest import beacon_cmd, beacon_env
from tests.gossip.conftest import Pool, needs_serf, new_key, wait_for
from tests.gossip.test_http_endpoints import serve

pytestmark = needs_serf


async def _cli(*argv: str) -> tuple[int, str, str]:
    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = beacon_main(list(argv))
        return code, out.getvalue(), err.getvalue()

    return await asyncio.to_thread(run)


async def test_keyring_and_rtt_commands(pool: Pool) -> None:
    for _ in range(3):
        await pool.add()
    await pool.converge()
    new = new_key()
    async with serve(pool.members[0]) as api:
        addr = api.base.removeprefix("http://")
        code, out, _ = await _cli("keyring", "-http-addr", addr, "-list")
        assert code == 0
        assert out == f"==> Gathering installed encryption keys...\n\ndc1 (LAN):\n  {pool.key} [3/3]\n"
        assert (await _cli("keyring", "-http-addr", addr, "-install", new))[0] == 0
        assert (await _cli("keyring", "-http-addr", addr, "-use", new))[0] == 0
        code, _, err = await _cli("keyring", "-http-addr", addr, "-remove", new)
        assert code == 1 and err.startswith("Error: ") and "500" in err
        assert (await _cli("keyring", "-http-addr", addr, "-remove", pool.key))[0] == 0
        assert (await _cli("keyring", "-http-addr", addr, "-list"))[1].endswith(f"  {new} [3/3]\n")
        code, _, err = await _cli("keyring", "-http-addr", addr, "-list", "-use", new)
        assert code == 1 and "Exactly one of" in err

        async def rtt_known() -> str | None:
            code, out, _ = await _cli("rtt", "-http-addr", addr, "n2", "n3")
            return out if code == 0 else None

        out = await wait_for(rtt_known, 30, what="coordinates for n2 and n3")
        m = re.fullmatch(r"Estimated n2 <-> n3 rtt: (\d+\.\d{3}) ms \(using LAN coordinates\)\n", out)
        assert m and 0 < float(m.group(1)) < 1000, out
        code, _, err = await _cli("rtt", "-http-addr", addr, "n2", "nope")
        assert code == 1 and "Could not find a coordinate for node 'nope'" in err


async def test_event_command_fires_through_the_agent(start_agent) -> None:
    agent = await asyncio.to_thread(start_agent)

    async def fire(*flags: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *beacon_cmd("event", "-http-addr", agent.http_addr, *flags), env=beacon_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        m = re.fullmatch(rb"Event ID: ([0-9a-f-]{36})\n", out)
        assert m, out
        return m.group(1).decode()

    async def listed() -> list[dict]:
        status, _, body = await asyncio.to_thread(agent.request, "GET", "/v1/event/list?name=deploy")
        assert status == 200
        return json.loads(body)

    first = await fire("-name", "deploy", "v42")
    assert [(e["ID"], base64.b64decode(e["Payload"])) for e in await listed()] == [(first, b"v42")]
    # A node filter this agent does not match: fired, but not kept here (Consul's filter semantics).
    await fire("-name", "deploy", "-node", "^no-such-node$", "v43")
    assert [e["ID"] for e in await listed()] == [first]
    code, _, err_text = await _cli("event", "-http-addr", agent.http_addr, "-name", "x", "-tag", "v1")
    assert code == 1 and "tag filter without service filter" in err_text
