"""Notifications after an approval commits (issue 8): CIBA ping and push delivery to the
agent's registered notification endpoint (CIBA Core 1.0 §10.2, §10.3) and the approver
group's webhook. Every request goes through ``tessera.outbound``'s rules (only the host the
administrator configured, https unless private test hosts are allowed, no redirects,
timeouts). Delivery runs after the commit, off the request path; a failed delivery never
undoes a decision (a ping client can still poll, and the audit ledger has the outcome).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from tessera.approvals.model import ApprovalRequest
from tessera.outbound import OutboundPolicy, OutboundRefused, check_url
from tessera.store.sql_approvals import SqlApprovalRepo

log = logging.getLogger("tessera.approvals")
RETRY_WINDOW: Final = 600.0  # seconds after the decision during which delivery is retried
FINAL: Final = frozenset(
    {"approval.approved", "approval.denied", "approval.expired", "approval.cancelled"}
)


def post_json(
    url: str, body: Mapping[str, Any], policy: OutboundPolicy, headers: Mapping[str, str]
) -> int:
    """POST JSON under the outbound rules; returns the status code (no redirects)."""
    check_url(url, policy)
    try:
        with httpx.Client(timeout=policy.timeout, follow_redirects=False) as client:
            resp = client.post(url, json=dict(body), headers=dict(headers))
    except httpx.HTTPError as exc:
        raise OutboundRefused(detail=f"{url[:200]}: {type(exc).__name__}") from exc
    return resp.status_code


class ApprovalDelivery:
    """An ``after_commit`` hook of ``ApprovalService``."""

    def __init__(
        self,
        store: Any,
        ciba: Any,
        open_token: Callable[[bytes], str],
        *,
        allow_private: bool,
        console_url: str,
        groups: Callable[[], Mapping[str, Any]],
        executor: Executor | None = None,
        clock: Any = None,
    ) -> None:
        self._store = store
        self._ciba = ciba
        self._open = open_token
        self._allow_private = allow_private
        self._console_url = console_url
        self._groups = groups
        self._executor = executor
        self._clock = clock
        self.sent: list[tuple[str, str]] = []  # (kind, auth_req_id): for operators and tests

    def __call__(self, req: ApprovalRequest, event: str) -> None:
        if event in FINAL and req.delivery in ("ping", "push") and req.notify_token:
            self._submit(self._notify_client, req, event)
        if event == "approval.requested" and req.group_name:
            group = self._groups().get(req.group_name)
            if group is not None and group.webhook:
                self._submit(self._webhook, req, group.webhook)

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._executor is None:
            fn(*args)
        else:
            self._executor.submit(fn, *args)

    def _policy(self, url: str) -> OutboundPolicy:
        host = (urlsplit(url).hostname or "").lower()
        return OutboundPolicy(frozenset({host}), allow_private=self._allow_private)

    def _notify_client(self, req: ApprovalRequest, event: str) -> None:
        with self._store.read() as tx:
            _, endpoint = SqlApprovalRepo(tx.connection).client(req.agent_id)
        if endpoint is None or req.notify_token is None:
            return
        token = self._open(req.notify_token)
        body: dict[str, Any] = {"auth_req_id": req.auth_req_id}
        if req.delivery == "push":
            body.update(self._push_body(req, event))
        try:
            status = post_json(
                endpoint, body, self._policy(endpoint), {"Authorization": f"Bearer {token}"}
            )
        except OutboundRefused as exc:
            log.warning("ciba %s for %s refused: %s", req.delivery, req.auth_req_id, exc.detail)
            return
        log.info("ciba %s for %s: HTTP %s", req.delivery, req.auth_req_id, status)
        if 200 <= status < 300:
            with self._store.write() as tx:
                SqlApprovalRepo(tx.connection).mark_notified(req.auth_req_id, self._now())
            self.sent.append((req.delivery, req.auth_req_id))

    def _now(self) -> Any:
        from tessera.clock import SystemClock

        return (self._clock or SystemClock()).now()

    def retry_undelivered(self, window: float = RETRY_WINDOW) -> int:
        """Deliver again what did not reach the client (the sweeper calls this): a ping is
        repeated, a push carries a fresh token (the undelivered one is void)."""
        from datetime import timedelta

        with self._store.read() as tx:
            due = SqlApprovalRepo(tx.connection).undelivered(
                self._now() - timedelta(seconds=window)
            )
        for req in due:
            event = {
                "approved": "approval.approved",
                "denied": "approval.denied",
                "expired": "approval.expired",
            }.get(req.status, "approval.cancelled")
            self._notify_client(req, event)
        return len(due)

    def _push_body(self, req: ApprovalRequest, event: str) -> dict[str, Any]:
        """CIBA §10.3.1: the token itself, or §12: the error."""
        if event == "approval.approved":
            body: dict[str, Any] | None = self._ciba.push_token(req.auth_req_id)
            if body is not None:
                return body
            return {"error": "transaction_failed", "error_description": "no longer valid"}
        if event == "approval.expired":
            return {"error": "expired_token", "error_description": "the request expired"}
        return {"error": "access_denied", "error_description": "the request was denied"}

    def _webhook(self, req: ApprovalRequest, url: str) -> None:
        body = {
            "type": "approval.requested",
            "auth_req_id": req.auth_req_id,
            "group": req.group_name,
            "action": req.action,
            "binding_message": req.binding_message,
            "required": req.required,
            "expires_at": req.expires_at.isoformat(),
            "console": self._console_url,
        }
        try:
            post_json(url, body, self._policy(url), {})
            self.sent.append(("webhook", req.auth_req_id))
        except OutboundRefused as exc:
            log.warning("approval webhook for %s refused: %s", req.auth_req_id, exc.detail)
