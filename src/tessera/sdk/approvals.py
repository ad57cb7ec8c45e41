"""Agent side of human approval (issue 8): a CIBA backchannel request for one call and the
CIBA grant poll (CIBA Core 1.0 §7.1, §10.1), with the agent's client assertion and DPoP."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from tessera.crypto.dpop import create_proof
from tessera.sdk.assertions import client_assertion
from tessera.sdk.client import SessionClient

CIBA_GRANT = "urn:openid:params:grant-type:ciba"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _post(client: SessionClient, path: str, form: dict[str, Any]) -> httpx.Response:
    url = client.issuer + path
    headers = {}
    if client.dpop_key is not None:
        headers["DPoP"] = create_proof(client.dpop_key, htm="POST", htu=url, iat=time.time())
    body = dict(form)
    body["client_assertion_type"] = JWT_BEARER
    body["client_assertion"] = client_assertion(client.key, client.client_id, client.issuer)
    return client.http.post(url, data=body, headers=headers)


def request_approval(
    client: SessionClient,
    session_token: str,
    *,
    action: str,
    resource: Mapping[str, str],
    arguments: Mapping[str, Any],
    login_hint: str | None = None,
    requested_expiry: int | None = None,
    client_notification_token: str | None = None,
) -> httpx.Response:
    """CIBA §7.1: ask for a human's approval of exactly this call."""
    details = [
        {
            "type": "tessera_approved_call",
            "action": action,
            "resource": dict(resource),
            "arguments": dict(arguments),
        }
    ]
    form: dict[str, Any] = {
        "session_token": session_token,
        "authorization_details": json.dumps(details),
    }
    if login_hint is not None:
        form["login_hint"] = login_hint
    if requested_expiry is not None:
        form["requested_expiry"] = str(requested_expiry)
    if client_notification_token is not None:
        form["client_notification_token"] = client_notification_token
    return _post(client, "/oauth/backchannel", form)


def poll_approval(client: SessionClient, auth_req_id: str) -> httpx.Response:
    """CIBA §10.1: one token request with the CIBA grant."""
    return _post(client, "/oauth/token", {"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id})


def wait_for_approval(
    client: SessionClient, auth_req_id: str, *, interval: float, deadline: float
) -> httpx.Response:
    """Poll at ``interval`` (adding 5 s on ``slow_down``, CIBA §11) until an answer other than
    ``authorization_pending`` arrives or ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    while True:
        resp = poll_approval(client, auth_req_id)
        error = resp.json().get("error") if resp.status_code != 200 else None
        if error == "slow_down":
            interval += 5
        elif error != "authorization_pending" or time.monotonic() > end:
            return resp
        time.sleep(interval)
