"""The gateway's HTTP/1.1 upstream client against a real local server (asyncio on
loopback, scripted per test): bodies by length, chunked and until close, SSE streamed as it
arrives, keep-alive reuse, a connection the upstream dropped (retried only when safe),
timeouts, size limits, no redirects, no header injection, TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tessera.http.gateway_client import UpstreamClient, UpstreamError

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


class Upstream:
    """A loopback server: ``reply(reader, writer, n)`` answers the n-th request of the
    server (after its head and body were read) and returns whether to keep the connection."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if not await self.reply(reader, writer, len(self.requests)):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_ctx)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if ssl_ctx else 'http'}://127.0.0.1:{port}/mcp"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def _json(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nmcp-session-id: s1\r\n{extra}\r\n"
    ).encode() + body


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def _ok(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
    writer.write(_json(b'{"n":%d}' % n))
    return True


def test_length_bodies_and_keep_alive_reuse() -> None:
    async def go() -> None:
        up = Upstream(_ok)
        url = await up.start()
        client = UpstreamClient()
        for n in (1, 2, 3):
            resp = await client.request(
                "POST", url, {"content-type": "application/json", "x-a": "b"}, b'{"q":1}'
            )
            assert (resp.status, resp.headers["mcp-session-id"]) == (200, "s1")
            assert await resp.read(1024) == b'{"n":%d}' % n
        assert up.connections == 1
        assert client.opened == 1
        first = up.requests[0].decode()
        assert first.startswith("POST /mcp HTTP/1.1\r\n")
        assert f"host: 127.0.0.1:{url.split(':')[2].split('/')[0]}\r\n" in first
        assert "content-length: 7\r\n" in first
        assert "x-a: b\r\n" in first
        assert first.endswith('\r\n\r\n{"q":1}')
        await client.aclose()
        await up.stop()

    run(go)


def test_chunked_bodies_with_extensions_and_trailers() -> None:
    async def reply(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\nabcd\r\n"
            b"A\r\n0123456789\r\n"
            b"0\r\nx-trailer: 1\r\n\r\n"
        )
        return True

    async def go() -> None:
        up = Upstream(reply)
        url = await up.start()
        client = UpstreamClient()
        for _ in range(2):
            resp = await client.request("GET", url, {})
            assert await resp.read(1024) == b"abcd0123456789"
        assert up.connections == 1  # the chunked body was read to its end: reusable
        await client.aclose()
        await up.stop()

    run(go)


def test_sse_is_streamed_as_it_arrives() -> None:
    go_on = asyncio.Event()

    async def reply(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        first = b"event: message\ndata: one\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await go_on.wait()  # the second event only after the client saw the first
        second = b"data: two\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second))
        return True

    async def go() -> None:
        up = Upstream(reply)
        url = await up.start()
        client = UpstreamClient()
        resp = await client.request("POST", url, {"accept": "text/event-stream"}, b"{}")
        assert resp.headers["content-type"] == "text/event-stream"
        seen = []
        async for chunk in resp.iter_body(5):
            seen.append(chunk)
            go_on.set()
        assert seen == [b"event: message\ndata: one\n\n", b"data: two\n\n"]
        await client.aclose()
        await up.stop()

    run(go)


def test_an_idle_connection_the_upstream_closed_is_not_reused() -> None:
    async def reply(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(_json(b"{}"))
        return False  # answer, then close (an idle timeout on the upstream)

    async def go() -> None:
        up = Upstream(reply)
        url = await up.start()
        client = UpstreamClient()
        assert await (await client.request("POST", url, {}, b"{}")).read(64) == b"{}"
        await asyncio.sleep(0.1)  # the FIN arrives while the connection is idle
        # a decided call (retry_safe=False) is not at risk: the dead connection is dropped
        assert await (await client.request("POST", url, {}, b"{}")).read(64) == b"{}"
        assert up.connections == 2
        assert len(up.requests) == 2
        await client.aclose()
        await up.stop()

    run(go)


def _dropping_second() -> Upstream:
    """Answers the first request; drops its connection on reading the second (the race
    of an upstream closing a keep-alive connection as a request arrives)."""

    async def reply(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        if n == 2:
            return False
        writer.write(_json(b"{}"))
        return True

    return Upstream(reply)


def test_a_dropped_reused_connection_is_retried_only_when_safe() -> None:
    async def go() -> None:
        up = _dropping_second()
        url = await up.start()
        client = UpstreamClient()
        await (await client.request("POST", url, {}, b"{}")).read(64)
        resp = await client.request("POST", url, {}, b"{}", retry_safe=True)
        assert await resp.read(64) == b"{}"
        assert len(up.requests) == 3
        assert up.connections == 2
        await client.aclose()
        await up.stop()

        up = _dropping_second()
        url = await up.start()
        client = UpstreamClient()
        await (await client.request("POST", url, {}, b"{}")).read(64)
        with pytest.raises(UpstreamError) as err:
            await client.request("POST", url, {}, b'{"method":"tools/call"}')
        assert err.value.kind == "closed"
        assert len(up.requests) == 2  # a decided call is never sent twice
        await client.aclose()
        await up.stop()

    run(go)


def test_a_fresh_connection_dropped_is_an_error_even_when_safe() -> None:
    async def reply(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        return False

    async def go() -> None:
        up = Upstream(reply)
        url = await up.start()
        client = UpstreamClient()
        with pytest.raises(UpstreamError) as err:
            await client.request("GET", url, {}, retry_safe=True)
        assert err.value.kind == "closed"
        assert len(up.requests) == 1
        await up.stop()

    run(go)


async def _post_and_read(client: UpstreamClient, url: str) -> bytes:
    resp = await client.request("POST", url, {}, b"{}", read_timeout=0.2)
    return await resp.read(1024, 0.2)


def test_read_and_connect_failures() -> None:
    async def silent(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        await asyncio.sleep(5)
        return False

    async def slow_body(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)
        return False

    async def go() -> None:
        client = UpstreamClient()
        for reply in (silent, slow_body):
            up = Upstream(reply)
            url = await up.start()
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamError) as err:
                await _post_and_read(client, url)
            assert err.value.kind == "read_timeout"
            assert asyncio.get_running_loop().time() - t0 < 2
            await up.stop()
        up = Upstream(_ok)
        url = await up.start()
        await up.stop()
        assert up.server is not None
        await up.server.wait_closed()
        with pytest.raises(UpstreamError) as err:
            await client.request("GET", url, {})
        assert err.value.kind == "connect"

    run(go)


def test_size_limits() -> None:
    async def big_length(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000)
        return True

    async def big_chunked(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(5):
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        writer.write(b"0\r\n\r\n")
        return True

    async def big_head(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nx-big: " + b"z" * 70_000 + b"\r\n\r\n")
        return True

    async def go() -> None:
        client = UpstreamClient()
        for reply in (big_length, big_chunked):
            up = Upstream(reply)
            url = await up.start()
            resp = await client.request("GET", url, {})
            with pytest.raises(UpstreamError) as err:
                await resp.read(4096)
            assert err.value.kind == "too_large"
            assert await (await client.request("GET", url, {})).read(8192)  # a new connection
            assert up.connections == 2
            await up.stop()
        up = Upstream(big_head)
        url = await up.start()
        with pytest.raises(UpstreamError) as err:
            await client.request("GET", url, {})
        assert err.value.kind == "protocol"
        await up.stop()

    run(go)


def test_bodies_until_close_redirects_and_bad_answers() -> None:
    async def until_close(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"a":1}')
        return False

    async def redirect(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(
            b"HTTP/1.1 302 Found\r\nlocation: http://elsewhere/\r\ncontent-length: 0\r\n\r\n"
        )
        return True

    async def garbage(reader: Any, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        return True

    async def go() -> None:
        client = UpstreamClient()
        up = Upstream(until_close)
        url = await up.start()
        assert await (await client.request("GET", url, {})).read(64) == b'{"a":1}'
        await up.stop()
        up = Upstream(redirect)
        url = await up.start()
        resp = await client.request("POST", url, {}, b"{}")
        assert resp.status == 302
        assert len(up.requests) == 1
        await up.stop()
        up = Upstream(garbage)
        url = await up.start()
        with pytest.raises(UpstreamError) as err:
            await client.request("GET", url, {})
        assert err.value.kind == "protocol"
        for bad in ({"x": "a\r\nevil: 1"}, {"x\r\nevil": "1"}, {"x": "é€"}):
            with pytest.raises(UpstreamError) as err:
                await client.request("GET", url, bad)
            assert err.value.kind == "bad_request"
        await up.stop()

    run(go)


def _tls(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_tls_upstreams_are_verified(tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls(tmp_path)

    async def go() -> None:
        up = Upstream(_ok)
        url = await up.start(server_ctx)
        client = UpstreamClient(ssl_context=client_ctx)
        for n in (1, 2):
            resp = await client.request("GET", url, {})
            assert (resp.status, await resp.read(64)) == (200, b'{"n":%d}' % n)
        assert up.connections == 1
        await client.aclose()
        untrusting = UpstreamClient(ssl_context=ssl.create_default_context())
        with pytest.raises(UpstreamError) as err:
            await untrusting.request("GET", url, {})
        assert err.value.kind == "connect"  # an unknown certificate: no request was sent
        await up.stop()

    run(go)


def test_a_connection_of_another_event_loop_is_not_reused() -> None:
    client = UpstreamClient()
    up = Upstream(_ok)

    async def first() -> str:
        url = await up.start()
        assert await (await client.request("GET", url, {})).read(64)
        return url

    loop = asyncio.new_event_loop()
    url = loop.run_until_complete(first())

    async def second() -> None:
        with pytest.raises(UpstreamError):  # the server lives on the first loop
            await client.request("GET", url, {}, read_timeout=0.3)

    asyncio.run(second())
    assert up.connections == 1
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(up.stop())
    loop.run_until_complete(asyncio.sleep(0.2))
    loop.close()
