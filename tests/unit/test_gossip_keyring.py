"""Keyring queries over a fake Serf RPC client: an answer with a member missing (no member reporting
an error) is asked again; a member that reports an error, or one that stays silent, is reported."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from beacon.gossip import KeyringError
from beacon.gossip.membership import KEYRING_ATTEMPTS, Membership
from beacon.gossip.rpc import SerfRPCError
from beacon.gossip.supervisor import SerfConfig


class FakeClient:
    closed = False

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str | None]] = []

    def _next(self, op: str, key: str | None) -> dict[str, Any]:
        self.calls.append((op, key))
        resp = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if resp["NumErr"] or resp["NumResp"] != resp["NumNodes"]:
            raise SerfRPCError(f"{resp['NumResp'] - resp['NumErr']}/{resp['NumNodes']} nodes reported success", resp)
        return resp

    async def list_keys(self) -> dict[str, Any]:
        return self._next("list", None)

    async def remove_key(self, key: str) -> dict[str, Any]:
        return self._next("remove", key)


def answer(resp: int, nodes: int = 6, err: int = 0, **messages: str) -> dict[str, Any]:
    return {"Keys": {"k1": resp}, "NumNodes": nodes, "NumResp": resp, "NumErr": err, "Messages": messages}


def pool(client: FakeClient) -> Membership:
    m = Membership(SimpleNamespace(config=SerfConfig(node_name="s1", data_dir="/nonexistent", pool="lan")))  # type: ignore[arg-type]
    m._client = client  # type: ignore[assignment]
    return m


def test_a_missing_answer_is_asked_again_and_the_complete_one_returned() -> None:
    client = FakeClient([answer(5), answer(6)])
    out = asyncio.run(pool(client).keyring_list())
    assert out["Keys"] == {"k1": 6} and out["NumNodes"] == 6
    assert client.calls == [("list", None), ("list", None)]


def test_a_change_with_a_missing_answer_is_sent_again() -> None:
    client = FakeClient([answer(5), answer(6)])
    asyncio.run(pool(client).keyring_remove("old"))
    assert client.calls == [("remove", "old"), ("remove", "old")]


def test_a_member_that_stays_silent_is_reported_after_the_last_attempt() -> None:
    client = FakeClient([answer(5)])
    with pytest.raises(KeyringError) as exc:
        asyncio.run(pool(client).keyring_list())
    assert len(client.calls) == KEYRING_ATTEMPTS
    assert exc.value.response["Keys"] == {"k1": 5} and exc.value.response["NumNodes"] == 6


def test_a_member_reporting_an_error_is_not_asked_again() -> None:
    client = FakeClient([answer(6, err=1, s2="Removing the primary key is not allowed")])
    with pytest.raises(KeyringError) as exc:
        asyncio.run(pool(client).keyring_remove("primary"))
    assert client.calls == [("remove", "primary")]
    assert exc.value.response["Messages"] == {"s2": "Removing the primary key is not allowed"}
