"""Composition root: config → store → services → edges. Only this module wires things."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine

from tessera.approvals.service import ApprovalService
from tessera.approvals.wiring import ApprovalEdges, build_approval_edges
from tessera.audit.checkpoint import DirectoryCheckpointSink
from tessera.audit.service import AuditService, AuditSettings
from tessera.audit.webhook import (
    DirectoryAndWebhookSink,
    WebhookCheckpointSink,
    WebhookSecret,
    webhook_health_recorder,
)
from tessera.behavior.service import BehaviourService
from tessera.behavior.wiring import build_behaviour
from tessera.clock import Clock, SystemClock
from tessera.config import Config
from tessera.crypto.keyring import KeyRing
from tessera.crypto.keys import SigningKey, generate_signing_key, new_kek
from tessera.crypto.nonce import DpopNonceIssuer
from tessera.errors import ConfigError
from tessera.identity.admin_tokens import AdminTokens
from tessera.identity.service import (
    IdentityService,
    IdentitySettings,
    LifecycleHook,
    StoredUserGrants,
)
from tessera.outbound import OutboundPolicy
from tessera.pdp.audit import AuditDecisionRecorder
from tessera.pdp.budgets import GroupedSessionBudgets
from tessera.pdp.directory import DirectoryService, StoredDirectory
from tessera.pdp.service import PdpService, build_pdp
from tessera.posture.review import ReviewService
from tessera.posture.service import PostureService
from tessera.rebac.service import RebacService
from tessera.signals.service import Signals
from tessera.signals.tailer import EventTailer, TailerSettings
from tessera.store.engine import make_engine, migrate, schema_is_current
from tessera.store.sql_audit import SqlAuditLedger
from tessera.store.sql_store import SqlStore
from tessera.tokens.ceiling_cascade import CeilingCascade
from tessera.tokens.introspection import LifecycleCascade, SessionAuthority
from tessera.tokens.issuers import (
    ACCESS_TOKEN_TYPE,
    DEV_ISSUER_SUFFIX,
    JWT_TOKEN_TYPE,
    TrustedIssuer,
    TrustedIssuers,
    load_trusted_issuers,
)
from tessera.tokens.service import TokenService
from tessera.tokens.spiffe import load_spiffe_bundles

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name
DEV_ISSUER_KEY_FILE = "dev-issuer.jwk"


@dataclass
class Tessera:
    config: Config
    clock: Clock
    store: SqlStore
    identity: IdentityService
    keyring: KeyRing
    admin_tokens: AdminTokens
    user_rights: StoredUserGrants
    tokens: TokenService
    sessions: SessionAuthority
    audit: AuditService
    rebac: RebacService
    pdp: PdpService
    approvals: ApprovalService  # implements tessera.approvals.ports.CallApprovals
    approval_edges: ApprovalEdges
    tailer: EventTailer
    signals: Signals
    dev_issuer_key: SigningKey | None = None
    behaviour: BehaviourService | None = None
    gateway: Any = None  # tessera.gateway.service.McpGateway when TESSERA_GATEWAY_CONFIG is set
    posture: PostureService | None = None  # issue 11: scanner, findings, schedule
    reviews: ReviewService | None = None  # issue 11: access review campaigns
    directory: DirectoryService | None = None  # issue 5: the PDP's directory (writes)

    def close(self) -> None:
        if self.behaviour is not None:
            self.behaviour.close()
        self.signals.stop()
        self.tailer.stop()
        self.audit.close()  # group commit's kept connection
        self.store.close()  # also gives back the budget writes' connection


def build(
    config: Config,
    *,
    clock: Clock | None = None,
    engine: Engine | None = None,
    check_schema: bool = True,
) -> Tessera:
    """Wire a Tessera instance. The schema must have been created by ``tessera init``."""
    clock = clock or SystemClock()
    engine = engine or make_engine(config.database_url)
    if check_schema and not schema_is_current(engine):
        raise ConfigError(
            "TESSERA_DATABASE_URL: the database is not initialised or not "
            "migrated; run `tessera init`"
        )
    store = SqlStore(engine, clock)
    kek = config.load_kek()
    tailer = node_tailer(config, store, clock)  # one event-log tailer for every cache
    rebac = RebacService(store, clock, staleness=config.staleness_bound, tailer=tailer)
    approvals = ApprovalService(store, clock, bundles=None, dev_mode=config.dev_mode)
    identity = IdentityService(
        store,
        clock,
        IdentitySettings(config.agent_max_lifetime_days),
        cascade=CombinedCascade(
            LifecycleCascade(clock),
            rebac.on_lifecycle,
            approvals.on_lifecycle,
            CeilingCascade(clock),
        ),
    )
    keyring = KeyRing(store, clock, kek)
    issuers = load_trusted_issuers(
        config.trusted_issuers_file, allow_private=config.outbound_allow_private
    )
    dev_key = load_dev_issuer_key(config)
    if dev_key is not None:
        issuers.append(dev_issuer(config, dev_key))
    # Nonces are stateless HMACs; every node derives the same key from the shared KEK.
    nonce_key = hmac.new(kek, b"tessera dpop nonce v1", hashlib.sha256).digest()
    tokens = TokenService(
        store,
        clock,
        keyring,
        issuer=config.issuer,
        trusted=TrustedIssuers(issuers),
        nonces=DpopNonceIssuer(nonce_key) if config.dpop_nonces else None,
        spiffe_bundles=load_spiffe_bundles(config.spiffe_bundles_file),
        tailer=tailer,
    )
    audit = build_audit(config, clock, engine, keyring)
    sessions = SessionAuthority(store, clock, keyring, tokens)
    behaviour, scorer = build_behaviour(config, store, clock, sessions)
    approval_edges = build_approval_edges(
        approvals,
        store,
        clock,
        config=config,
        kek=kek,
        keyring=keyring,
        tokens=tokens,
        dev_issuers=TrustedIssuers([dev_issuer(config, dev_key)]) if dev_key else None,
    )
    posture, reviews = build_posture(config, clock, store, identity, sessions)
    usernames = UsernameOf(store)  # one cache for the ReBAC stage and the directory
    t = Tessera(
        config=config,
        clock=clock,
        store=store,
        identity=identity,
        keyring=keyring,
        admin_tokens=AdminTokens(store, clock),
        user_rights=StoredUserGrants(store),
        tokens=tokens,
        sessions=sessions,
        audit=audit,
        rebac=rebac,
        pdp=build_pdp(
            store,
            clock,
            keys=keyring.lookup,
            issuer=config.issuer,
            tokens=tokens,
            rebac=rebac,
            tailer=tailer,
            recorder=AuditDecisionRecorder(audit),
            user_ref=usernames,
            # budget decrements at decision time written in groups
            budgets=GroupedSessionBudgets(store),
            behaviour=scorer,
            observer=scorer,
            # the directory from the store, followed through the tailer
            # users by username, as ReBAC names them (decisions.md 90)
            attributes=StoredDirectory(store, tailer, username_of=usernames),
        ),
        approvals=approvals,
        approval_edges=approval_edges,
        tailer=tailer,
        signals=build_signals(config, store, clock, keyring, audit, tailer),
        dev_issuer_key=dev_key,
        behaviour=behaviour,
        posture=posture,
        reviews=reviews,
        directory=DirectoryService(store, clock),
    )
    # decisions.md 85: `policy apply --with-model` writes the pinned model
    t.pdp.policies.models = rebac
    # decisions.md 89: `rebac model apply` refuses a model the active bundle does not pin
    rebac.pins = t.pdp.policies
    # cached PDP callers are forgotten on service/credential/key events
    tailer.subscribe("pdp-callers", t.pdp.callers.on_events)
    approvals.bundles = t.pdp.policies  # issue 8: approval rules come from the bundle
    t.pdp.point.approvals = approval_edges.ciba  # context.approval_token (pdp/approval.py)
    # MCP gateway (issue 9): session taint durable in the store and shared by every node.
    from tessera.gateway.wiring import durable_taint

    t.pdp.point.taint = durable_taint(t)
    return t


def build_signals(
    config: Config,
    store: SqlStore,
    clock: Clock,
    keyring: KeyRing,
    audit: AuditService,
    tailer: EventTailer,
) -> Signals:
    """SSF transmitter (streams, SET outbox, push worker fed by the tailer) and receiver."""
    from tessera.signals.delivery import PushWorker
    from tessera.signals.model import SsfSettings
    from tessera.signals.receiver import SsfReceiver, load_transmitters
    from tessera.signals.streams import SsfTransmitter
    from tessera.store.sql_signals import SqlSignalsStore

    sstore = SqlSignalsStore(store)
    settings = SsfSettings(config.issuer, config.ssf_push_hosts, config.outbound_allow_private)
    # push Authorization headers are sealed under a subkey of the KEK (key separation)
    box = hmac.new(config.load_kek(), b"tessera ssf push authorization v1", hashlib.sha256)
    transmitter = SsfTransmitter(
        sstore, clock, keyring.active_key, settings, secret_key=box.digest()
    )
    transmitters = load_transmitters(
        config.ssf_transmitters_file, allow_private=config.outbound_allow_private
    )
    receiver = SsfReceiver(sstore, clock, transmitters, issuer=config.issuer, audit=audit)
    signals = Signals(transmitter, PushWorker(transmitter, sstore, clock), receiver)
    signals.follow(tailer)
    return signals


def node_tailer(config: Config, store: SqlStore, clock: Clock) -> EventTailer:
    """The node's event-log tailer; on PostgreSQL a LISTEN connection wakes it."""
    settings = TailerSettings(
        staleness=config.staleness_bound,
        poll_interval=config.event_poll_interval,
        notify=config.event_notify,
        enabled=config.event_tailing,
        wait_timeout=config.staleness_bound,
    )
    wake = None
    if store.backend == "postgresql":
        from tessera.store.pg_listen import PgNotifyWake, libpq_conninfo

        wake = PgNotifyWake(libpq_conninfo(store.engine))
    return EventTailer(store, clock, settings, wake_source=wake)


def build_posture(
    config: Config,
    clock: Clock,
    store: SqlStore,
    identity: IdentityService,
    sessions: SessionAuthority,
) -> tuple[PostureService, ReviewService]:
    """Posture scanner over one inventory snapshot and one ledger pass, its findings table,
    remediation through the identity and session services, and access reviews."""
    from dataclasses import replace

    from tessera.policy.service import PolicyService
    from tessera.posture.remediation import Remediator
    from tessera.posture.scanner import PostureScanner
    from tessera.posture.settings import PostureSettings
    from tessera.store.sql_posture import SqlAuditUsage, SqlFindingStore, SqlPostureInventory
    from tessera.store.sql_review import SqlReviewStore

    policies = PolicyService(store, clock)

    def with_bundle(settings: PostureSettings) -> PostureSettings:
        active = policies.active()
        return (
            replace(settings, scope_types=dict(active.bundle.scope_types)) if active else settings
        )

    settings = PostureSettings(
        dormant_days=config.posture_dormant_days,
        usage_window_days=config.posture_window_days,
        key_rotation_days=config.posture_key_rotation_days,
        max_agent_lifetime_days=config.agent_max_lifetime_days,
        max_delegation_depth=config.posture_max_delegation_depth,
    )
    scanner = PostureScanner(
        SqlPostureInventory(store.engine),
        SqlAuditUsage(store.engine),
        clock,
        settings,
        refresh=with_bundle,
    )
    reviews = ReviewService(
        SqlReviewStore(store), identity, clock, default_on_expiry=config.review_on_expiry
    )
    posture = PostureService(
        scanner,
        SqlFindingStore(store),
        Remediator(identity, sessions),
        clock,
        interval=float(config.posture_interval),
        on_schedule=[reviews.close_expired],
    )
    return posture, reviews


class CombinedCascade:
    """Runs every lifecycle hook, in order, inside the identity change's transaction."""

    def __init__(self, *hooks: LifecycleHook) -> None:
        self._hooks = hooks

    def __call__(self, tx: Any, event: str, subject: str, payload: dict[str, Any]) -> None:
        for hook in self._hooks:
            hook(tx, event, subject, payload)


def build_audit(config: Config, clock: Clock, engine: Engine, keyring: KeyRing) -> AuditService:
    """The audit ledger service; checkpoints also go to ``$TESSERA_DATA_DIR/checkpoints``
    and, when ``TESSERA_AUDIT_CHECKPOINT_WEBHOOK`` is set, to the webhook (delivered in the
    background from markers in ``$TESSERA_DATA_DIR/checkpoints-undelivered``)."""
    directory = config.audit_checkpoint_dir or config.data_dir / "checkpoints"
    sink = DirectoryCheckpointSink(directory)
    webhook = _checkpoint_webhook(config, clock)
    if webhook is not None:
        sink = DirectoryAndWebhookSink(directory, webhook)
    settings = AuditSettings(
        issuer=config.issuer,
        checkpoint_every=config.audit_checkpoint_every,
        checkpoint_interval=float(config.audit_checkpoint_interval),
    )
    audit = AuditService(SqlAuditLedger(engine, clock), clock, keyring, sink, settings)
    if webhook is not None:
        webhook.on_health = webhook_health_recorder(audit.record)
    return audit


def _checkpoint_webhook(config: Config, clock: Clock) -> WebhookCheckpointSink | None:
    url = config.audit_checkpoint_webhook
    if url is None:
        return None
    secret = config.audit_checkpoint_webhook_secret
    return WebhookCheckpointSink(
        url,
        config.data_dir / "checkpoints-undelivered",
        OutboundPolicy(
            frozenset({(urlsplit(url).hostname or "").lower()}),
            allow_private=config.outbound_allow_private,
            timeout=config.audit_checkpoint_webhook_timeout,
            max_bytes=64 * 1024,
        ),
        secret=None
        if secret is None
        else WebhookSecret(
            "hmac" if config.audit_checkpoint_webhook_auth == "hmac" else "bearer", secret
        ),
        clock=clock,
    )


class UsernameOf:
    """User id → username, as relationship tuples name users (``user:alice``). Usernames
    never change, so answers are cached; an unknown id maps to itself (and matches nothing)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._cache: dict[str, str] = {}

    def __call__(self, user_id: str) -> str:
        name = self._cache.get(user_id)
        if name is None:
            with self._store.read() as tx:
                user = tx.users.get(user_id)
            if user is None:
                return user_id
            name = user.username
            if len(self._cache) < 100_000:
                self._cache[user_id] = name
        return name


def load_dev_issuer_key(config: Config) -> SigningKey | None:
    """The development user-token issuer's key; trusted only in development mode."""
    path = config.data_dir / DEV_ISSUER_KEY_FILE
    if not config.dev_mode or not path.exists():
        return None
    data = json.loads(path.read_text())
    return SigningKey(kid=data["kid"], alg="ES256", private_jwk=data["jwk"])


def dev_issuer(config: Config, key: SigningKey) -> TrustedIssuer:
    from tessera.crypto.jws import JwksKeys

    return TrustedIssuer(
        config.issuer + DEV_ISSUER_SUFFIX,
        JwksKeys([key.public_jwk()]),
        ("ES256",),
        frozenset({JWT_TOKEN_TYPE, ACCESS_TOKEN_TYPE}),
    )


@dataclass(frozen=True)
class InitResult:
    created_kek: bool
    kid: str
    admin_token: str | None  # shown once; None when the store already had one
    admin_token_file: Path | None


def write_private_file(path: Path, content: str) -> None:
    """Write a secret (key, token) readable by the owner only; parents are created 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    path.chmod(0o600)


def initialise(
    config: Config,
    *,
    clock: Clock | None = None,
    new_admin_token: bool = False,
    engine: Engine | None = None,
) -> InitResult:
    """``tessera init``: data dir, KEK file, schema, first signing key, first admin token.

    Safe to run again: it creates only what is missing."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created_kek = False
    if config.kek is None and not config.kek_file.exists():
        write_private_file(config.kek_file, new_kek() + "\n")
        created_kek = True
    engine = engine or make_engine(config.database_url)
    migrate(engine)
    app = build(config, clock=clock, engine=engine)
    kid = app.keyring.ensure_active(config.signing_alg, actor="init")  # type: ignore[arg-type]
    token: str | None = None
    token_file: Path | None = None
    if config.dev_mode and not (config.data_dir / DEV_ISSUER_KEY_FILE).exists():
        key = generate_signing_key("ES256")
        write_private_file(
            config.data_dir / DEV_ISSUER_KEY_FILE,
            json.dumps({"kid": key.kid, "jwk": key.private_jwk}),
        )
    if new_admin_token or not app.admin_tokens.any_exist():
        _, token = app.admin_tokens.create("init", actor="init")
        if config.dev_mode:
            # Development only (make run): a plain copy the demo walkthrough reads.
            token_file = config.data_dir / ADMIN_TOKEN_FILE
            write_private_file(token_file, token + "\n")
    return InitResult(created_kek, kid, token, token_file)
