"""The approval service: requests bound to one call, votes, expiry, cancellation, and the
``CallApprovals`` port of the gateway (COORDINATION). CIBA wire handling is in ``ciba.py``,
passkeys in ``passkeys.py``, notifications in ``delivery.py``.

Every request, approval, denial, expiry and cancellation appends an ``approval.*`` event in
the same transaction as the state change (so it reaches the audit ledger through the outbox);
payloads are ``{agent, session, action, argument_hash, approvers}``: no arguments, no tokens.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Final

from tessera.approvals.model import (
    COLLECT_WINDOW,
    DEFAULT_INTERVAL,
    ApprovalRequest,
    ApprovalStateError,
    Decision,
    Vote,
    binding_message,
    check_vote,
    eligible_approvers,
    group_key,
    redact,
    server_tool,
    tally,
)
from tessera.approvals.ports import ApprovalTicket, CallApprovals, CallToApprove
from tessera.clock import Clock
from tessera.crypto.canonical import argument_hash
from tessera.errors import InvalidInput, NotFound
from tessera.identity.model import UserStatus
from tessera.policy.approval_rules import ApprovalPolicy, Requirement, annotation_approvers
from tessera.store.sql_approvals import SqlApprovalRepo

CANCEL_ON: Final = frozenset({"agent.suspended", "agent.decommissioned"})
SYSTEM: Final = "system"

# Called after commit with (request, final event type): ping/push delivery and webhooks.
AfterCommit = Callable[[ApprovalRequest, str], None]


def new_auth_req_id() -> str:
    """CIBA §7.3: an opaque, unguessable identifier (160 bits)."""
    return "areq_" + secrets.token_urlsafe(20)


class ApprovalService:
    """Implements ``tessera.approvals.ports.CallApprovals``."""

    def __init__(
        self,
        store: Any,
        clock: Clock,
        *,
        bundles: Any,
        dev_mode: bool = False,
        interval: int = DEFAULT_INTERVAL,
    ) -> None:
        self._store = store
        self._clock = clock
        self.bundles = bundles  # the PDP's PolicyService (set by app.build)
        self.dev_mode = dev_mode
        self.interval = interval
        self.after_commit: list[AfterCommit] = []
        self._sweeper: tuple[Any, Any] | None = None
        self.sweep_hooks: list[Callable[[], object]] = []  # e.g. delivery retries

    # -- policy --------------------------------------------------------------------------

    def policy(self) -> tuple[ApprovalPolicy, Any]:
        active = self.bundles.active() if self.bundles is not None else None
        if active is None:
            return ApprovalPolicy(), None
        return active.bundle.approvals, active.bundle

    def requirement(
        self, action: str, resource_type: str, risk: Mapping[str, Any] | None
    ) -> Requirement:
        """What the call needs. Annotations are read from every permit that could apply to
        (action, resource type): at least what the PDP required, never less."""
        policy, bundle = self.policy()
        annotated: list[tuple[str, int]] = []
        if bundle is not None:
            for pid in bundle.cedar.slice_ids(action, resource_type):
                n = annotation_approvers(bundle.cedar.annotation(pid, "approval"))
                if n is not None and bundle.cedar.is_permit(pid):
                    annotated.append((pid, n))
        level = str(risk.get("level")) if risk else None
        return policy.requirement(action, annotated=annotated, risk_level=level) or Requirement()

    # -- requests ------------------------------------------------------------------------

    def request_for_call(
        self, call: CallToApprove, *, request_id: str | None = None
    ) -> ApprovalTicket:
        """COORDINATION: a gateway ``tools/call`` answered ``approval_required``."""
        with self._store.write() as tx:
            req, created = self.create(tx, call, origin="gateway")
        self._after(req, "approval.requested" if created else "")
        return self.ticket(req)

    def create(
        self,
        tx: Any,
        call: CallToApprove,
        *,
        origin: str,
        login_hint: str | None = None,
        requested_expiry: int | None = None,
        delivery: str = "poll",
        notify_token: bytes | None = None,
    ) -> tuple[ApprovalRequest, bool]:
        """Create (or join an identical pending) request inside ``tx``. Returns the request
        and whether it is new. Fatigue guards deny at once (and say why in the audit)."""
        now = self._clock.now()
        server, tool = server_tool(call.action)
        if argument_hash(server, tool, dict(call.arguments)) != call.argument_hash:
            raise InvalidInput("argument_hash does not match the arguments")
        repo = SqlApprovalRepo(tx.connection)
        key = group_key(
            call.agent_id,
            call.session_id,
            call.action,
            call.resource,
            call.argument_hash,
            call.dpop_jkt,
        )
        existing = repo.find_pending_group(key, now)
        if existing is not None and existing.delivery == delivery:
            repo.bump_repeats(existing.auth_req_id)
            return existing, False
        policy, _ = self.policy()
        need = self.requirement(call.action, str(call.resource.get("type", "")), call.risk)
        agent = tx.agents.get(call.agent_id)
        if agent is None:
            raise NotFound("no such agent")
        members: list[str] | None = None
        if need.group is not None:
            group = policy.groups.get(need.group)
            members = [self._user_id(tx, m) or "" for m in (group.members if group else ())]
        candidates = [
            u
            for u in eligible_approvers(
                required=need.approvers,
                user_id=call.user_id,
                owner_id=agent.owner_user_id,
                group_members=[m for m in members or [] if m] if members is not None else None,
                excluded=(call.agent_id, *call.act_chain),
            )
            if self._active_user(tx, u)
        ]
        outcome: str | None = None
        if login_hint is not None:
            hinted = self._user_id(tx, login_hint)
            if hinted is None or hinted not in candidates:
                raise ApprovalStateError("unknown_user_id", "login_hint names no approver")
            if need.approvers == 1:
                candidates = [hinted]
        f = policy.fatigue
        since = now - timedelta(seconds=f.window)
        if repo.denials_since(call.agent_id, call.action, since) >= f.auto_deny_after:
            outcome = "auto_denied: repeated denials"
        else:
            routed = [u for u in candidates if repo.routed_since(u, since) < f.max_per_approver]
            if len(routed) < len(candidates) and len(routed) < need.approvers:
                outcome = "auto_denied: approver rate limit"
            candidates = routed if len(routed) >= need.approvers else candidates
        if outcome is None and len(candidates) < need.approvers:
            outcome = "auto_denied: not enough approvers"
        expiry = policy.expiry if requested_expiry is None else min(requested_expiry, policy.expiry)
        shown = redact(dict(call.arguments), policy.redact)
        req = ApprovalRequest(
            auth_req_id=new_auth_req_id(),
            status="pending" if outcome is None else "denied",
            origin=origin,
            agent_id=call.agent_id,
            session_id=call.session_id,
            user_id=call.user_id,
            act_chain=tuple(call.act_chain),
            action=call.action,
            resource={"type": call.resource.get("type"), "id": call.resource.get("id")},
            arguments=shown,
            argument_hash=call.argument_hash,
            dpop_jkt=call.dpop_jkt,
            decision_id=call.decision_id,
            reasons=tuple(dict(r) for r in call.reasons),
            risk=dict(call.risk) if call.risk else None,
            binding_message=binding_message(call.action, shown, call.argument_hash),
            required=need.approvers,
            group_name=need.group,
            passkey_required=need.passkey,
            delivery=delivery,
            group_key=key,
            repeats=1,
            interval=self.interval,
            created_at=now,
            expires_at=now + timedelta(seconds=expiry),
            candidates=tuple(candidates) if outcome is None else (),
            decided_at=None if outcome is None else now,
            outcome=outcome,
            notify_token=notify_token,
        )
        repo.add(req)
        self._event(tx, "approval.requested", req, list(candidates), SYSTEM)
        if outcome is not None:
            self._event(tx, "approval.denied", req, [], SYSTEM)
        return req, True

    def ticket(self, req: ApprovalRequest) -> ApprovalTicket:
        return ApprovalTicket(
            req.auth_req_id, req.expires_in(self._clock.now()), req.interval, req.status
        )

    def get(self, auth_req_id: str) -> ApprovalRequest:
        self.expire_due()
        with self._store.read() as tx:
            req = SqlApprovalRepo(tx.connection).get(auth_req_id)
        if req is None:
            raise NotFound("no such approval request")
        return req

    def status(self, auth_req_id: str) -> ApprovalTicket:
        """COORDINATION: the gateway polls this (expiry is applied first)."""
        return self.ticket(self.get(auth_req_id))

    def list(
        self, *, status: str | None = None, user_id: str | None = None, limit: int = 100
    ) -> list[ApprovalRequest]:
        self.expire_due()
        with self._store.read() as tx:
            return SqlApprovalRepo(tx.connection).search(
                status=status, user_id=user_id, limit=limit
            )

    # -- redemption ----------------------------------------------------------------------

    def redeem_for_call(self, auth_req_id: str, call: CallToApprove) -> bool:
        """COORDINATION: consume an approved request for exactly this session, action,
        resource, argument hash and jkt: True once, False ever after and for anything else.
        Afterwards the CIBA grant for it answers ``invalid_grant``."""
        now = self._clock.now()
        with self._store.write() as tx:
            repo = SqlApprovalRepo(tx.connection)
            req = repo.get(auth_req_id, for_update=True)
            if req is None or not matches(req, call):
                return False
            return repo.mark_redeemed(auth_req_id, now, jti=None)

    # -- votes ---------------------------------------------------------------------------

    def decide(
        self, auth_req_id: str, approver: str, decision: Decision, note: str, *, method: str
    ) -> ApprovalRequest:
        """One approver's decision (method ``passkey``, ``admin`` or ``dev``). The first
        denial denies; N distinct approvals approve (dual control)."""
        if decision not in ("approve", "deny"):
            raise InvalidInput("decision must be approve or deny")
        if len(note) > 500:
            raise InvalidInput("the note is limited to 500 characters")
        self.expire_due()
        now = self._clock.now()
        with self._store.write() as tx:
            repo = SqlApprovalRepo(tx.connection)
            req = repo.get(auth_req_id, for_update=True)
            if req is None:
                raise NotFound("no such approval request")
            check_vote(req, approver, method, decision, now, accept_dev=self.dev_mode)
            vote = Vote(approver, decision, method, note, now)
            repo.add_vote(auth_req_id, vote)
            votes = [*req.votes, vote]
            status = tally(req, votes)
            after = replace(req, votes=tuple(votes))
            final = ""
            if status == "approved":
                until = now + timedelta(seconds=COLLECT_WINDOW)
                if not repo.transition(auth_req_id, ["pending"], "approved", now, expires_at=until):
                    raise ApprovalStateError("not_pending", "the request was decided meanwhile")
                after = replace(after, status="approved", decided_at=now, expires_at=until)
                final = "approval.approved"
                voters = [v.approver for v in votes if v.decision == "approve"]
            elif status == "denied":
                if not repo.transition(auth_req_id, ["pending"], "denied", now, outcome="denied"):
                    raise ApprovalStateError("not_pending", "the request was decided meanwhile")
                after = replace(after, status="denied", decided_at=now)
                final = "approval.denied"
                voters = [approver]
            else:
                voters = [approver]
            self._event(tx, final or "approval.voted", after, voters, approver, method=method)
        self._after(after, final)
        return after

    # -- expiry and cancellation ---------------------------------------------------------

    def expire_due(self) -> int:
        """Expire pending requests past ``expires_at`` (and approved ones never collected)."""
        now = self._clock.now()
        with self._store.read() as tx:
            if not SqlApprovalRepo(tx.connection).due(now, limit=1):
                return 0
        done: list[ApprovalRequest] = []
        with self._store.write() as tx:
            repo = SqlApprovalRepo(tx.connection)
            for req in repo.due(now):
                if repo.transition(
                    req.auth_req_id,
                    [req.status],
                    "expired",
                    now,
                    outcome="expired",
                    unspent=req.status == "approved",
                ):
                    expired = replace(req, status="expired")
                    self._event(tx, "approval.expired", expired, [], SYSTEM)
                    done.append(expired)
        for req in done:
            self._after(req, "approval.expired")
        return len(done)

    def start_sweeper(self, every: float = 5.0) -> None:
        """A daemon thread that expires due requests every ``every`` seconds, so expiry is
        audited (and ping/push clients hear of it) even when nobody polls."""
        import threading

        if self._sweeper is not None:
            return
        stop = threading.Event()

        def run() -> None:
            rounds = 0
            while not stop.wait(every):
                rounds += 1
                try:
                    self.expire_due()
                    for hook in self.sweep_hooks:
                        hook()
                    if rounds % 120 == 0:  # every ten minutes by default
                        with self._store.write() as tx:
                            SqlApprovalRepo(tx.connection).purge_sessions(self._clock.now())
                except Exception:  # noqa: S112 - a store hiccup; the next round retries
                    continue

        self._sweeper = (threading.Thread(target=run, name="approvals-expiry", daemon=True), stop)
        self._sweeper[0].start()

    def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper[1].set()
            self._sweeper = None

    def on_lifecycle(self, tx: Any, event: str, subject: str, payload: Mapping[str, Any]) -> None:
        """Identity cascade hook (``CombinedCascade``): a suspended or decommissioned agent's
        open approvals are cancelled in the same transaction as the change (an operator
        suspension cancels those of every agent it names)."""
        if event in CANCEL_ON:
            agents = [subject]
        elif event == "operator.suspended":
            agents = [str(a) for a in payload.get("agents", [])]
        else:
            return
        now = self._clock.now()
        repo = SqlApprovalRepo(tx.connection)
        for agent in agents:
            for req in repo.open_for_agent(agent):
                if repo.transition(
                    req.auth_req_id, ["pending", "approved"], "cancelled", now, outcome=event
                ):
                    self._event(tx, "approval.cancelled", req, [], SYSTEM)

    # -- helpers -------------------------------------------------------------------------

    def _event(
        self,
        tx: Any,
        etype: str,
        req: ApprovalRequest,
        approvers: Sequence[str],
        actor: str,
        **extra: Any,
    ) -> None:
        payload: dict[str, Any] = {
            "agent": req.agent_id,
            "session": req.session_id,
            "action": req.action,
            "argument_hash": req.argument_hash,
            "approvers": list(approvers),
        }
        payload.update(extra)
        tx.events.append(etype, req.auth_req_id, payload, actor)

    def _after(self, req: ApprovalRequest, event: str) -> None:
        if not event:
            return
        for hook in self.after_commit:
            try:
                hook(req, event)
            except Exception:  # noqa: S112 - delivery never undoes a committed decision
                continue

    @staticmethod
    def _user_id(tx: Any, ref: str) -> str | None:
        user = tx.users.get(ref)
        return None if user is None else str(user.id)

    @staticmethod
    def _active_user(tx: Any, user_id: str) -> bool:
        user = tx.users.get(user_id)
        return user is not None and user.status == UserStatus.ACTIVE


def as_port(service: ApprovalService) -> CallApprovals:
    """``ApprovalService`` is the gateway's ``CallApprovals`` (mypy checks the shape)."""
    return service


def matches(req: ApprovalRequest, call: CallToApprove) -> bool:
    """Is ``call`` exactly the call ``req`` approved? (session, agent, action, resource,
    argument hash, DPoP key)."""
    return (
        req.session_id == call.session_id
        and req.agent_id == call.agent_id
        and req.action == call.action
        and req.resource.get("type") == call.resource.get("type")
        and req.resource.get("id") == call.resource.get("id")
        and req.argument_hash == call.argument_hash
        and req.dpop_jkt == call.dpop_jkt
    )


def describe(req: ApprovalRequest, now: datetime) -> dict[str, Any]:
    """The JSON view of a request (CLI, console): no tokens, arguments already redacted."""
    return {
        "auth_req_id": req.auth_req_id,
        "status": req.status,
        "origin": req.origin,
        "agent": req.agent_id,
        "session": req.session_id,
        "user": req.user_id,
        "act": list(req.act_chain),
        "action": req.action,
        "resource": dict(req.resource),
        "arguments": req.arguments,
        "argument_hash": req.argument_hash,
        "binding_message": req.binding_message,
        "decision_id": req.decision_id,
        "reasons": [dict(r) for r in req.reasons],
        "risk": req.risk,
        "required": req.required,
        "group": req.group_name,
        "passkey_required": req.passkey_required,
        "approvers": list(req.candidates),
        "votes": [
            {"approver": v.approver, "decision": v.decision, "method": v.method, "note": v.note}
            for v in req.votes
        ],
        "repeats": req.repeats,
        "created_at": req.created_at.isoformat(),
        "expires_in": req.expires_in(now),
        "outcome": req.outcome,
        "spent": req.spent,
    }


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
