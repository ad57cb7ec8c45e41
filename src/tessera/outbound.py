"""Outbound HTTP under DESIGN 9's rules: configured hosts only, no redirects, private and
special address ranges refused unless configured (tests and development on loopback),
timeouts, and a response size limit.

Used for trusted issuers' JWKS now; SSF push and webhooks will use it too. The host's
addresses are checked before connecting; a DNS answer that changes between the check and the
connection (rebinding) is a residual risk that ``allowed_hosts`` limits to hosts an
administrator named.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from tessera.errors import Unavailable


class OutboundRefused(Unavailable):
    code = "outbound_refused"
    title = "Outbound request refused"


@dataclass(frozen=True)
class OutboundPolicy:
    allowed_hosts: frozenset[str]
    allow_private: bool = False  # loopback/private ranges, and plain http, for tests
    timeout: float = 5.0
    max_bytes: int = 1 << 20


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_url(url: str, policy: OutboundPolicy) -> None:
    """Refuse a URL the policy does not allow (before any connection)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise OutboundRefused(detail=f"not an http(s) URL: {url[:200]}")
    if parts.scheme == "http" and not policy.allow_private:
        raise OutboundRefused(detail="plain http is allowed only for private test hosts")
    if host not in policy.allowed_hosts:
        raise OutboundRefused(detail=f"host {host!r} is not configured")
    try:
        infos = socket.getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP
        )
    except OSError as exc:
        raise OutboundRefused(detail=f"cannot resolve {host!r}") from exc
    addresses = {str(info[4][0]) for info in infos}
    if not policy.allow_private and not all(_public(a) for a in addresses):
        raise OutboundRefused(detail=f"{host!r} resolves to a private or special address")


def fetch_json(url: str, policy: OutboundPolicy) -> Any:
    """GET a JSON document: 200 only, no redirects, bounded time and size."""
    check_url(url, policy)
    try:
        with (
            httpx.Client(timeout=policy.timeout, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as resp,
        ):
            if resp.status_code != 200:
                raise OutboundRefused(detail=f"{url[:200]} answered {resp.status_code}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body.extend(chunk)
                if len(body) > policy.max_bytes:
                    raise OutboundRefused(
                        detail=f"{url[:200]} answered more than {policy.max_bytes} bytes"
                    )
    except httpx.HTTPError as exc:
        raise OutboundRefused(detail=f"{url[:200]}: {type(exc).__name__}") from exc
    try:
        return json.loads(bytes(body))
    except ValueError as exc:
        raise OutboundRefused(detail=f"{url[:200]} did not answer JSON") from exc


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: OutboundPolicy,
    *,
    client: httpx.Client | None = None,
) -> tuple[int, bytes]:
    """POST ``body``: no redirects (a 3xx is returned as is), bounded time and response size.
    Transport failures raise ``OutboundRefused``; every HTTP status is returned. A caller
    may pass its own ``client`` (kept alive between requests; it must not follow
    redirects)."""
    check_url(url, policy)
    own = client is None
    http = client or httpx.Client(timeout=policy.timeout, follow_redirects=False)
    try:
        with http.stream(
            "POST", url, content=body, headers=headers, follow_redirects=False
        ) as resp:
            answer = bytearray()
            for chunk in resp.iter_bytes():
                answer.extend(chunk)
                if len(answer) > policy.max_bytes:
                    raise OutboundRefused(
                        detail=f"{url[:200]} answered more than {policy.max_bytes} bytes"
                    )
            return resp.status_code, bytes(answer)
    except httpx.HTTPError as exc:
        raise OutboundRefused(detail=f"{url[:200]}: {type(exc).__name__}") from exc
    finally:
        if own:
            http.close()
