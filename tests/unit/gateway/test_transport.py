"""SSE framing (HTML Living Standard §9.2) and gateway session ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tessera.gateway.transport import SessionBinder, rpc_error, sse_events


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


def _parse(*parts: bytes) -> list[tuple[str | None, str, str | None]]:
    async def run() -> list[tuple[str | None, str, str | None]]:
        return [(e.event, "\n".join(e.data), e.id) async for e in sse_events(_chunks(*parts))]

    return asyncio.run(run())


def test_events_split_across_chunks_and_line_endings() -> None:
    events = _parse(
        b'event: message\r\nid: 7\r\ndata: {"a":',
        b" 1}\r\n\r",
        b"\n: a comment\n\ndata: line one\ndata: line two\n\ndata:x\rdata: y\r\r",
    )
    assert events == [
        ("message", '{"a": 1}', "7"),
        (None, "line one\nline two", None),
        (None, "x\ny", None),
    ]


def test_encoding_round_trips() -> None:
    (event,) = [e for e in _event_list(b"event: message\nid: 3\ndata: a\ndata: b\n\n")]
    assert event.encode() == b"event: message\nid: 3\ndata: a\ndata: b\n\n"
    assert event.encode('{"x":1}') == b'event: message\nid: 3\ndata: {"x":1}\n\n'


def _event_list(raw: bytes) -> list:  # type: ignore[type-arg]
    async def run() -> list:  # type: ignore[type-arg]
        return [e async for e in sse_events(_chunks(raw))]

    return asyncio.run(run())


def test_session_ids_bind_server_and_agent() -> None:
    binder = SessionBinder(b"k" * 32)
    wrapped = binder.wrap("tools", "agt_a", "up-123")
    assert binder.unwrap("tools", "agt_a", wrapped) == "up-123"
    assert binder.unwrap("tools", "agt_b", wrapped) is None  # another agent
    assert binder.unwrap("mail", "agt_a", wrapped) is None  # another server
    assert binder.unwrap("tools", "agt_a", "up-123") is None  # not one we issued
    assert binder.unwrap("tools", "agt_a", wrapped[:-1] + "A") is None
    assert SessionBinder(b"j" * 32).unwrap("tools", "agt_a", wrapped) is None  # other key


def test_rpc_errors_have_the_json_rpc_shape() -> None:
    assert rpc_error(3, -32001, "denied", {"reason": "no_permit"}) == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32001, "message": "denied", "data": {"reason": "no_permit"}},
    }
