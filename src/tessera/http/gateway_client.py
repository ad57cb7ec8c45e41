"""A lean asyncio HTTP/1.1 client for the gateway's upstream MCP servers (RFC 9112).

Only what the proxy needs, at a fraction of a general client's cost per request: one
keep-alive connection pool per origin, ``Content-Length``, chunked and close-delimited
bodies, streamed bodies (SSE is relayed as it arrives), TLS through an ``ssl`` context for
``https`` upstreams, connect and read timeouts, limits on the response head and body.
Redirects are never followed (a 3xx is just an answer). Errors are ``UpstreamError`` with a
short kind and never carry a header, a body or a credential, so logging one is safe.

Retrying: a request is sent again on a fresh connection only when the caller says it is safe
(``retry_safe``: an idempotent or undecided message) and the failure is the classic stale
keep-alive race: a reused connection that gave not one byte of an answer. A decided
``tools/call`` is never sent twice; an idle connection the upstream closed is noticed before
reuse (its EOF was already read by the event loop) and dropped instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Final
from urllib.parse import urlsplit

MAX_HEAD: Final = 64 * 1024  # status line and headers of one response
READ_CHUNK: Final = 64 * 1024
IDLE_TTL: Final = 4.0  # below the usual server keep-alive (uvicorn 5 s, nginx 75 s)
MAX_IDLE: Final = 64  # idle connections kept per origin
_NO_BODY: Final = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in HTTP/1.1. ``kind`` is one of
    ``connect``, ``connect_timeout``, ``read_timeout``, ``closed``, ``protocol``,
    ``too_large``, ``bad_request``."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _Origin:
    __slots__ = ("host", "key", "port", "prefix", "ssl")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError("bad_request")
        self.ssl = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.ssl else 80)
        self.key = (parts.scheme, self.host, self.port)
        default = self.port == (443 if self.ssl else 80)
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        host_header = netloc if default else f"{netloc}:{self.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.prefix = f" {target} HTTP/1.1\r\nhost: {host_header}\r\n"


class _Conn:
    __slots__ = ("idle_since", "loop", "reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, loop: object
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = loop
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop it belonged to may be gone
            self.writer.close()

    def usable(self, loop: object, now: float) -> bool:
        return (
            self.loop is loop
            and now - self.idle_since < IDLE_TTL
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )


class UpstreamResponse:
    """The status and headers of an answer; the body is read with ``read`` or streamed
    with ``iter_body``, once. ``aclose`` gives the connection back when the body was read
    to its end, and closes it otherwise."""

    __slots__ = ("_client", "_conn", "_key", "_left", "_mode", "_reusable", "headers", "status")

    def __init__(
        self,
        client: UpstreamClient,
        key: tuple[str, str, int],
        conn: _Conn,
        status: int,
        headers: dict[str, str],
        head_only: bool,
    ) -> None:
        self._client = client
        self._key = key
        self._conn: _Conn | None = conn
        self.status = status
        self.headers = headers
        self._reusable = headers.get("connection", "").lower() != "close"
        te = headers.get("transfer-encoding")
        self._left = 0
        if head_only or status in _NO_BODY or status < 200:
            self._mode = "none"
        elif te is not None:
            # RFC 9112 6.3: chunked must be the last coding; otherwise the body ends at close
            self._mode = "chunked" if te.lower().rsplit(",", 1)[-1].strip() == "chunked" else "eof"
            if "content-length" in headers:  # both framings: not to be trusted again
                self._reusable = False
        elif "content-length" in headers:
            raw = headers["content-length"]
            values = {v.strip() for v in raw.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise UpstreamError("protocol")
            self._mode, self._left = "length", int(next(iter(values)))
        else:
            self._mode = "eof"
        if self._mode == "eof":
            self._reusable = False
        if self._mode == "none" or (self._mode == "length" and self._left == 0):
            self._done()

    def _done(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._reusable:
                self._client._checkin(self._key, conn)
            else:
                conn.close()

    def _fail(self, kind: str) -> UpstreamError:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        return UpstreamError(kind)

    async def read(self, limit: int, read_timeout: float | None = None) -> bytes:
        """The whole body; ``UpstreamError("too_large")`` beyond ``limit`` bytes."""
        if self._conn is None:
            return b""
        if self._mode == "length":
            if self._left > limit:
                raise self._fail("too_large")
            try:
                async with asyncio.timeout(read_timeout):
                    body = await self._conn.reader.readexactly(self._left)
            except TimeoutError:
                raise self._fail("read_timeout") from None
            except (OSError, asyncio.IncompleteReadError):
                raise self._fail("closed") from None
            self._left = 0
            self._done()
            return body
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_body(read_timeout):
            size += len(chunk)
            if size > limit:
                raise self._fail("too_large")
            parts.append(chunk)
        return b"".join(parts)

    async def iter_body(self, read_timeout: float | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives (chunks de-chunked); ``read_timeout`` bounds each wait."""
        conn = self._conn
        if conn is None:
            return
        reader = conn.reader
        try:
            while self._conn is not None:
                async with asyncio.timeout(read_timeout):
                    chunk = await self._next(reader)
                if chunk is None:
                    self._done()
                    return
                if chunk:
                    yield chunk
        except TimeoutError:
            raise self._fail("read_timeout") from None
        except (OSError, asyncio.IncompleteReadError):
            raise self._fail("closed") from None
        except (ValueError, asyncio.LimitOverrunError):
            raise self._fail("protocol") from None
        finally:
            if self._conn is not None and self._conn is conn:
                # the consumer stopped early: the rest of the body is unread
                self._fail("closed")

    async def _next(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next piece of the body, ``b""`` for nothing yet, None at its end."""
        if self._mode == "length":
            if self._left == 0:
                return None
            data = await reader.read(min(self._left, READ_CHUNK))
            if not data:
                raise asyncio.IncompleteReadError(b"", self._left)
            self._left -= len(data)
            return data
        if self._mode == "eof":
            data = await reader.read(READ_CHUNK)
            return data or None
        if self._left == 0:  # chunked: a chunk-size line
            line = await reader.readuntil(b"\n")
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16:
                raise ValueError("bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                while (await reader.readuntil(b"\n")).strip():  # trailer fields
                    pass
                return None
            self._left = size
        data = await reader.read(min(self._left, READ_CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", self._left)
        self._left -= len(data)
        if self._left == 0 and await reader.readexactly(2) != b"\r\n":
            raise ValueError("bad chunk ending")
        return data

    async def aclose(self) -> None:
        if self._conn is not None:
            if self._mode == "length" and self._left == 0:
                self._done()
            else:
                self._fail("closed")


class UpstreamClient:
    """Keep-alive connections per origin (scheme, host, port), reused last-in first-out;
    one event loop at a time (connections of a loop that is gone are dropped)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = MAX_IDLE,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._origins: dict[str, _Origin] = {}
        self.opened = 0  # connections opened (for tests and the benchmark)
        self.closed = False

    def _origin(self, url: str) -> _Origin:
        found = self._origins.get(url)
        if found is None:
            found = _Origin(url)
            if len(self._origins) > 1024:
                self._origins.clear()
            self._origins[url] = found
        return found

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # verifies the chain and the host name
        return self._ssl

    def _checkout(self, key: tuple[str, str, int], loop: object) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(loop, now):
                return conn
            conn.close()
        return None

    def _checkin(self, key: tuple[str, str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(key, [])
        if self.closed or len(idle) >= self._max_idle or conn.writer.is_closing():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connect(self, origin: _Origin, loop: object) -> _Conn:
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    origin.host,
                    origin.port,
                    ssl=self._ssl_context() if origin.ssl else None,
                    server_hostname=origin.host if origin.ssl else None,
                    limit=MAX_HEAD,
                )
        except TimeoutError:
            raise UpstreamError("connect_timeout") from None
        except (OSError, ssl.SSLError):
            raise UpstreamError("connect") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # pragma: no cover - not a TCP socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return _Conn(reader, writer, loop)

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        read_timeout: float | None = 30.0,
        retry_safe: bool = False,
    ) -> UpstreamResponse:
        """Send one request and read the answer's head (``read_timeout`` bounds that wait)."""
        if self.closed:
            raise UpstreamError("closed")
        origin = self._origin(url)
        lines = [method, origin.prefix]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
                raise UpstreamError("bad_request")  # no header injection into the upstream
            lines.append(f"{name}: {value}\r\n")
        if body is not None:
            lines.append(f"content-length: {len(body)}\r\n")
        lines.append("\r\n")
        try:
            head = "".join(lines).encode("latin-1")
        except UnicodeEncodeError:
            raise UpstreamError("bad_request") from None
        message = head + body if body else head
        loop = asyncio.get_running_loop()
        while True:
            conn = self._checkout(origin.key, loop)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin, loop)
            try:
                conn.writer.write(message)
                async with asyncio.timeout(read_timeout):
                    await conn.writer.drain()
                    status, fields = await _read_head(conn.reader)
                    while 100 <= status < 200:  # interim answers (we never send Expect)
                        if status == 101:
                            raise ValueError("unexpected protocol switch")
                        status, fields = await _read_head(conn.reader)
            except TimeoutError:
                conn.close()
                raise UpstreamError("read_timeout") from None
            except asyncio.IncompleteReadError as exc:
                conn.close()
                if reused and retry_safe and not exc.partial:
                    continue  # the upstream had closed the idle connection: once more, fresh
                raise UpstreamError("closed") from None
            except (ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused and retry_safe:
                    continue
                raise UpstreamError("closed") from None
            except OSError:
                conn.close()
                raise UpstreamError("closed") from None
            except (ValueError, asyncio.LimitOverrunError):
                conn.close()
                raise UpstreamError("protocol") from None
            try:
                return UpstreamResponse(self, origin.key, conn, status, fields, method == "HEAD")
            except UpstreamError:
                conn.close()
                raise

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError("not an HTTP/1.1 status line")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise ValueError("malformed header field")  # includes obsolete line folding
        key = name.lower()
        value = value.strip()
        fields[key] = f"{fields[key]}, {value}" if key in fields else value
    if version == "HTTP/1.0" and fields.get("connection", "").lower() != "keep-alive":
        fields["connection"] = "close"
    return int(code), fields


__all__ = ["UpstreamClient", "UpstreamError", "UpstreamResponse"]
