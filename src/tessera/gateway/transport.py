"""MCP streamable HTTP plumbing for the proxy (MCP transports, "Streamable HTTP"):
JSON-RPC framing, Server-Sent Events parsing and writing, and gateway session ids.

Session ids: the gateway hands the agent ``<upstream session id>.<mac>`` where the MAC
(HMAC-SHA-256 under a key every node derives from the shared KEK) binds the upstream's id to
the server and the agent. Any node can check it without shared state, and one agent can
never ride another agent's upstream session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from tessera.crypto.hashing import b64url

JSONRPC: Final = "2.0"
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
DENIED: Final = -32001  # Tessera: the call was refused by a decision (COORDINATION)
UPSTREAM_ERROR: Final = -32002
MAX_SESSION_ID: Final = 512
MAX_EVENT: Final = 4 * 1024 * 1024


def rpc_error(
    msg_id: Any, code: int, message: str, data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON-RPC 2.0 §5.1 error object."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = dict(data)
    return {"jsonrpc": JSONRPC, "id": msg_id, "error": err}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class SessionBinder:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, server: str, agent: str, upstream_sid: str) -> str:
        msg = f"{server}\x00{agent}\x00{upstream_sid}".encode()
        return b64url(hmac.new(self._key, msg, hashlib.sha256).digest()[:18])

    def wrap(self, server: str, agent: str, upstream_sid: str) -> str:
        return f"{upstream_sid}.{self._mac(server, agent, upstream_sid)}"

    def unwrap(self, server: str, agent: str, value: str) -> str | None:
        """The upstream session id, or None when the id is not one we gave this agent."""
        if len(value) > MAX_SESSION_ID or "." not in value:
            return None
        upstream_sid, _, mac = value.rpartition(".")
        want = self._mac(server, agent, upstream_sid)
        if not upstream_sid or not hmac.compare_digest(mac.encode(), want.encode()):
            return None
        return upstream_sid


class SseEvent:
    __slots__ = ("data", "event", "id", "retry")

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] = []
        self.id: str | None = None
        self.retry: str | None = None

    def encode(self, data: str | None = None) -> bytes:
        """The event in the text/event-stream format (HTML Living Standard §9.2.5)."""
        lines = []
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        body = "\n".join(self.data) if data is None else data
        if self.data or data is not None:
            lines.extend(f"data: {line}" for line in body.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SseEvent]:
    """Parse a text/event-stream (HTML Living Standard §9.2.6) into events; comments are
    dropped, an event over ``MAX_EVENT`` bytes ends the stream."""
    buf = b""
    event = SseEvent()
    size = 0
    async for chunk in chunks:
        buf += chunk
        while True:
            cut = -1
            for sep in (b"\r\n", b"\n", b"\r"):
                i = buf.find(sep)
                if i != -1 and (cut == -1 or i < cut):
                    cut, width = i, len(sep)
            if cut == -1:
                break
            if buf[cut : cut + 1] == b"\r" and cut + 1 == len(buf):
                break  # a lone CR at the end may be the first half of CRLF
            line, buf = buf[:cut].decode("utf-8", "replace"), buf[cut + width :]
            if line == "":
                if event.data or event.event or event.id:
                    yield event
                event, size = SseEvent(), 0
                continue
            size += len(line)
            if size > MAX_EVENT:
                return
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                event.data.append(value)
            elif name == "event":
                event.event = value
            elif name == "id":
                event.id = value
            elif name == "retry":
                event.retry = value
    if event.data:
        yield event
