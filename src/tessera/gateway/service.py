"""The gateway as one object: its configuration, the resource guard, the call gate, the
upstream credentials and the approval port. ``admit`` is the synchronous half of a request
(authentication, decision, upstream credential) and runs off the event loop in one hop;
``tessera.http.gateway`` is the asynchronous half (the MCP transport and the proxying).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tessera.gateway.authorize import (
    AUTHORIZED_METHODS,
    CallGate,
    CallRequest,
    CallVerdict,
    parse_call,
)
from tessera.gateway.config import GatewayConfig, Upstream
from tessera.gateway.ports import CallApprovals
from tessera.gateway.resource import (
    Authenticated,
    ResourceGuard,
    Unauthorized,
    canonical_resource,
    metadata_url,
    resource_metadata,
)
from tessera.gateway.transport import SessionBinder
from tessera.pdp.agents import Caller
from tessera.tokens.upstream import UpstreamTokenExchange


@dataclass
class Admission:
    """What the synchronous half decided for one HTTP request."""

    auth: Authenticated
    call: CallRequest | None = None
    verdict: CallVerdict | None = None
    invalid_params: str | None = None
    credential: tuple[str, str] | None = None  # (header, value) for the upstream
    credential_jti: str | None = None
    evidence: Any = None  # the asyncio task writing the allow record (see http.gateway)


class McpGateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        base_url: str,
        issuer: str,
        service_id: str,
        service_name: str,
        guard: ResourceGuard,
        gate: CallGate,
        exchange: UpstreamTokenExchange,
        binder: SessionBinder,
        audit: Any,
        approvals: CallApprovals | None = None,
        liveness: Callable[[str, str], tuple[bool, str]] | None = None,
        token_endpoint: str | None = None,
    ) -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.issuer = issuer
        self.service_id = service_id
        self.service_name = service_name
        self.guard = guard
        self.gate = gate
        self.exchange = exchange
        self.binder = binder
        self.audit = audit
        self.approvals = approvals
        self.liveness = liveness
        self.token_endpoint = token_endpoint or f"{issuer}/oauth/token"
        self._callers: dict[str, Caller] = {}
        self._lock = threading.Lock()

    # -- resource identity -----------------------------------------------------------

    def upstream(self, server: str) -> Upstream | None:
        return self.config.upstreams.get(server)

    def resource_uri(self, server: str) -> str:
        return canonical_resource(self.base_url, server)

    def metadata_url(self, server: str) -> str:
        return metadata_url(self.base_url, server)

    def metadata(self, server: str) -> dict[str, Any]:
        return resource_metadata(self.base_url, server, self.issuer)

    def caller(self, server: str) -> Caller:
        """The gateway as the PDP sees it when it decides for ``server``: the registered
        service, answering only for that server's canonical resource URI."""
        found = self._callers.get(server)
        if found is None:
            found = Caller(
                self.service_id,
                self.service_name,
                "in_process",
                frozenset({self.resource_uri(server)}),
            )
            with self._lock:
                self._callers[server] = found
        return found

    # -- the synchronous half of a request -------------------------------------------

    def admit(
        self,
        http_method: str,
        server: str,
        headers: Mapping[str, str],
        rpc_method: str | None,
        params: Any,
    ) -> Admission:
        """Authenticate (raises ``Unauthorized``), then for ``tools/call``,
        ``resources/read`` and ``prompts/get`` decide, and get the upstream credential."""
        up = self.config.upstreams[server]
        caller = self.caller(server)
        auth = self.guard.authenticate(http_method, self.resource_uri(server), headers, caller)
        adm = Admission(auth)
        label = rpc_method or http_method.lower()
        if rpc_method in AUTHORIZED_METHODS:
            parsed = parse_call(server, rpc_method, params)
            if isinstance(parsed, str):
                adm.invalid_params = parsed
                return adm
            adm.call = parsed
            adm.verdict = self.gate.decide(up, parsed, auth.agent, auth.token, auth.jkt, caller)
            label = parsed.action
            if not adm.verdict.decision.allowed:
                return adm
        self._credential(up, adm, label)
        return adm

    def _credential(self, up: Upstream, adm: Admission, label: str) -> None:
        cred = up.credential
        if cred.mode == "exchange" and cred.audience is not None:
            minted = self.exchange.exchange(adm.auth.agent.claims, cred.audience, label)
            adm.credential = (cred.header, _scheme(cred.header, minted.token))
            adm.credential_jti = minted.jti
        elif cred.mode == "static" and cred.secret is not None:
            adm.credential = (cred.header, _scheme(cred.header, cred.secret))

    def credential_for(self, up: Upstream, adm: Admission, label: str) -> None:
        """Late credential (after an approval arrived)."""
        self._credential(up, adm, label)

    def still_live(self, auth: Authenticated) -> bool:
        """Is the session behind a long-lived stream still usable (revocation)?"""
        if self.liveness is None:
            return True
        live, _ = self.liveness(auth.agent.token_hash, auth.agent.claims.sid)
        return live

    def unauthorized_headers(self, server: str, err: Unauthorized | None) -> list[tuple[str, str]]:
        from tessera.gateway.resource import challenges

        return [("www-authenticate", v) for v in challenges(self.metadata_url(server), err)]


def _scheme(header: str, secret: str) -> str:
    return f"Bearer {secret}" if header.lower() == "authorization" else secret


def replay_once(store: Any) -> Callable[[str, datetime], bool]:
    """DPoP proof ``jti``s through the shared replay cache (decisions.md 14, kind ``dpop``)."""

    def use(key: str, expires: datetime) -> bool:
        # One driver-level INSERT ... ON CONFLICT DO NOTHING (no savepoint, no Core
        # statement to build): the same row, and the same answer, as ``use_once``.
        with store.write() as tx:
            return bool(tx.replay.use_all([("dpop", key, expires)]))

    return use


class AgentDpopPolicy:
    """Does the agent's ceiling require DPoP right now? Read through the token service's
    identity cache and remembered until the event log moves (every ceiling or lifecycle
    change appends an event, decisions.md 3-4)."""

    def __init__(self, store: Any, tokens: Any, event_head: Callable[[], int]) -> None:
        self._store = store
        self._tokens = tokens
        self._head = event_head
        self._cache: dict[str, tuple[int, bool]] = {}

    def __call__(self, agent_id: str) -> bool:
        head = self._head()
        hit = self._cache.get(agent_id)
        if hit is not None and hit[0] == head:
            return hit[1]
        with self._store.read() as raw:
            agent = self._tokens.view(raw).agents.get(agent_id)
        required = True if agent is None else bool(agent.ceiling.dpop_required)
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[agent_id] = (head, required)
        return required
