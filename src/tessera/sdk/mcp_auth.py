"""What an agent needs to talk to MCP servers through the Tessera gateway.

``SessionTokenSource`` obtains the session token (RFC 7523 ``private_key_jwt`` client
authentication, RFC 8707 ``resource`` = the gateway's canonical resource URI, RFC 9396
details, a model attestation) and gets a fresh one shortly before it expires.
``GatewayAuth`` is an ``httpx.Auth`` that puts the token on every request — as
``Authorization: DPoP`` with a DPoP proof per request (RFC 9449 §7.1: ``htm``, ``htu``,
``ath``; the server's ``DPoP-Nonce`` is used and a ``use_dpop_nonce`` refusal retried once),
or as a bearer token for agents registered with ``dpop_required: false`` — and gets a new
token once when the gateway answers ``invalid_token``.

The official ``mcp`` SDK uses ``httpx2``; ``mcp_http_client(auth)`` returns an
``httpx2.AsyncClient`` that runs the same flow::

    auth = GatewayAuth(source, dpop_key=dpop_key)
    async with Client(streamable_http_client(url, http_client=mcp_http_client(auth))) as c:
        await c.call_tool("read_file", {"path": "/srv/public/a.txt"})
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from tessera.crypto.dpop import create_proof
from tessera.crypto.keys import SigningKey
from tessera.sdk.client import SessionClient

REFRESH_MARGIN: Final = 60


class SessionRefused(Exception):
    """The token endpoint refused the session request (``error`` is the OAuth code)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error


class SessionTokenSource:
    """One agent session for one resource, renewed before ``exp``."""

    def __init__(
        self,
        client: SessionClient,
        *,
        resource: str,
        details: dict[str, Any],
        attestation: Callable[[], str] | None = None,
        model_digest: str | None = None,
        subject_token: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin: int = REFRESH_MARGIN,
    ) -> None:
        self._client = client
        self.resource = resource
        self._details = details
        self._attestation = attestation
        self._digest = model_digest
        self._subject = subject_token
        self._clock = clock
        self._margin = refresh_margin
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        """The current session token; a new one when none is held or it is about to end."""
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._expires - self._margin:
                self._token, lifetime = self._request()
                self._expires = now + lifetime
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the server refused it) so the next call gets a new session."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _request(self) -> tuple[str, float]:
        resp = self._client.session(
            details=self._details,
            resource=self.resource,
            attestation=self._attestation() if self._attestation else None,
            model_digest=self._digest,
            subject_token=self._subject() if self._subject else None,
        )
        try:
            body = resp.json()
        except ValueError:
            raise SessionRefused("server_error", f"HTTP {resp.status_code}") from None
        if resp.status_code != 200 or not isinstance(body.get("access_token"), str):
            raise SessionRefused(
                str(body.get("error", "server_error")), body.get("error_description", "")
            )
        return body["access_token"], float(body.get("expires_in", 300))


def _htu(url: Any) -> str:
    parts = urlsplit(str(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _error_of(response: Any) -> str | None:
    for value in response.headers.get_list("www-authenticate"):
        if 'error="' in value:
            return str(value.split('error="', 1)[1].split('"', 1)[0])
    return None


class GatewayAuthFlow:
    """The flow, independent of the HTTP library (``httpx`` and ``httpx2`` requests and
    responses expose the same members it uses)."""

    def __init__(self, source: SessionTokenSource, *, dpop_key: SigningKey | None) -> None:
        self.source = source
        self.dpop_key = dpop_key
        self._nonces: dict[str, str] = {}

    def _sign(self, request: Any, token: str) -> None:
        if self.dpop_key is None:
            request.headers["Authorization"] = f"Bearer {token}"
            return
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = create_proof(
            self.dpop_key,
            htm=request.method,
            htu=_htu(request.url),
            access_token=token,
            nonce=self._nonces.get(origin),
            iat=time.time(),
        )

    def _retry(self, request: Any, response: Any, token: str) -> str | None:
        """After a 401: the token to retry with, or None to give up."""
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        nonce = response.headers.get("dpop-nonce")
        if nonce:
            self._nonces[origin] = nonce
        error = _error_of(response)
        if error == "use_dpop_nonce" and nonce:
            return token
        if error == "invalid_token":
            self.source.invalidate(token)
            return ""  # fetch a new one
        return None

    def flow(self, request: Any) -> Generator[Any, Any, None]:
        token = self.source.token()
        self._sign(request, token)
        response = yield request
        if response.status_code != 401:
            return
        again = self._retry(request, response, token)
        if again is None:
            return
        self._sign(request, again or self.source.token())
        yield request

    async def async_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        import anyio.to_thread

        token = await anyio.to_thread.run_sync(self.source.token)
        self._sign(request, token)
        response = yield request
        if response.status_code != 401:
            return
        again = self._retry(request, response, token)
        if again is None:
            return
        if not again:
            again = await anyio.to_thread.run_sync(self.source.token)
        self._sign(request, again)
        yield request


class GatewayAuth(httpx.Auth):
    """``httpx.Auth`` for the gateway: session token plus DPoP proofs (RFC 9449 §7.1)."""

    def __init__(self, source: SessionTokenSource, *, dpop_key: SigningKey | None) -> None:
        self.flow = GatewayAuthFlow(source, dpop_key=dpop_key)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        return self.flow.flow(request)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        return self.flow.flow(request)

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self.flow.async_flow(request)


def httpx2_auth(auth: GatewayAuth) -> Any:
    """The same flow as an ``httpx2.Auth`` (the HTTP client of the official ``mcp`` SDK and
    of Starlette's test client). Needs the ``mcp`` package (it brings ``httpx2``)."""
    import httpx2

    flow = auth.flow

    class _Auth(httpx2.Auth):
        def auth_flow(
            self, request: httpx2.Request
        ) -> Generator[httpx2.Request, httpx2.Response, None]:
            return flow.flow(request)

        def async_auth_flow(
            self, request: httpx2.Request
        ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
            return flow.async_flow(request)

    return _Auth()


def mcp_http_client(auth: GatewayAuth, **kwargs: Any) -> Any:
    """An ``httpx2.AsyncClient`` for ``mcp.client.streamable_http.streamable_http_client``
    that authenticates like ``auth``."""
    import httpx2

    kwargs.setdefault("timeout", httpx2.Timeout(30.0, read=300.0))
    return httpx2.AsyncClient(auth=httpx2_auth(auth), **kwargs)


__all__ = [
    "GatewayAuth",
    "SessionRefused",
    "SessionTokenSource",
    "httpx2_auth",
    "mcp_http_client",
]
