"""Outbound HTTP rules (DESIGN 9) and trusted issuers' JWKS fetched from a jwks_uri,
against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tessera.crypto.jws import sign_jwt
from tessera.crypto.keys import generate_signing_key
from tessera.errors import ConfigError
from tessera.outbound import OutboundPolicy, OutboundRefused, check_url, fetch_json
from tessera.tokens.issuers import JWT_TOKEN_TYPE, TrustedIssuers, issuer_from_config
from tessera.tokens.oauth_errors import OAuthError


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"{}"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.routes = {}
    _Handler.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()


LOCAL = OutboundPolicy(frozenset({"localhost"}), allow_private=True, timeout=2, max_bytes=4096)


def test_fetch_json_follows_the_rules(server: str) -> None:
    _Handler.routes["/ok"] = (200, {"Content-Type": "application/json"}, b'{"a": 1}')
    _Handler.routes["/redirect"] = (302, {"Location": "/ok"}, b"")
    _Handler.routes["/big"] = (200, {}, b"[" + b"1," * 5000 + b"1]")
    _Handler.routes["/html"] = (200, {}, b"<html>")
    assert fetch_json(f"{server}/ok", LOCAL) == {"a": 1}
    for path in ("/redirect", "/big", "/html", "/missing"):
        with pytest.raises(OutboundRefused):
            fetch_json(f"{server}{path}", LOCAL)
    assert "/ok" in _Handler.hits
    assert _Handler.hits.count("/ok") == 1  # the redirect was not followed


def test_hosts_and_address_ranges_must_be_allowed(server: str) -> None:
    strict = OutboundPolicy(frozenset({"localhost"}))
    with pytest.raises(OutboundRefused):
        check_url(f"{server}/ok", strict)  # plain http and a loopback address
    with pytest.raises(OutboundRefused):
        check_url("https://localhost/x", strict)  # https, but loopback is private
    with pytest.raises(OutboundRefused):
        check_url("https://evil.example/x", LOCAL)  # not a configured host
    with pytest.raises(OutboundRefused):
        check_url("ftp://localhost/x", LOCAL)


def test_issuer_keys_come_from_its_jwks_uri_and_follow_rotation(server: str) -> None:
    k1, k2 = generate_signing_key(), generate_signing_key()
    _Handler.routes["/jwks"] = (200, {}, json.dumps({"keys": [k1.public_jwk()]}).encode())
    issuer = issuer_from_config(
        {
            "issuer": "https://idp.example",
            "jwks_uri": f"{server}/jwks",
            "subject_token_types": [JWT_TOKEN_TYPE],
        },
        base_dir=None,  # type: ignore[arg-type]
        allow_private=True,
    )
    issuer.keys.min_refresh = 0.0  # type: ignore[attr-defined]
    trusted = TrustedIssuers([issuer])
    now = time.time()

    def token(key: Any) -> str:
        return sign_jwt(
            {
                "iss": "https://idp.example",
                "sub": "alice",
                "aud": "https://t",
                "exp": int(now) + 60,
            },
            key,
            typ="JWT",
        )

    assert (
        trusted.verify(token(k1), JWT_TOKEN_TYPE, tessera_issuer="https://t", now=now).user_ref
        == "alice"
    )
    # the issuer rotates: a token with the new kid triggers one refetch
    _Handler.routes["/jwks"] = (200, {}, json.dumps({"keys": [k2.public_jwk()]}).encode())
    assert (
        trusted.verify(token(k2), JWT_TOKEN_TYPE, tessera_issuer="https://t", now=now).user_ref
        == "alice"
    )
    # an issuer whose keys cannot be fetched refuses every token (fail closed)
    _Handler.routes["/jwks"] = (500, {}, b"")
    with pytest.raises(OAuthError):
        trusted.verify(
            token(generate_signing_key()), JWT_TOKEN_TYPE, tessera_issuer="https://t", now=now
        )


def test_a_jwks_uri_outside_the_rules_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        issuer_from_config(
            {"issuer": "https://idp.example", "jwks_uri": "http://127.0.0.1:1/jwks"}, base_dir=None
        )  # type: ignore[arg-type]
