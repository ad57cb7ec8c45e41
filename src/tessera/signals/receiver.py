"""The SSF receiver: SETs pushed by configured transmitters (RFC 8935), verified and applied.

Transmitters are configured like trusted issuers (``TESSERA_SSF_TRANSMITTERS``, a JSON
array): ``issuer``, exactly one of ``jwks`` / ``jwks_file`` / ``jwks_uri`` (fetched under
the outbound rules), ``audience`` (string or list: what this receiver must find in ``aud``),
optional ``algorithms`` (default ES256) and ``user_issuers`` (issuers whose ``iss_sub``
subjects name users of this Tessera by id or username; default: the transmitter itself).

Checks, each failure with its RFC 8935 §2.4 error code and an audit record:

* ``Content-Type: application/secevent+jwt``, a compact JWS whose header ``typ`` is
  ``secevent+jwt`` and whose claims hold ``iss``, ``jti``, ``iat`` and a non-empty
  ``events`` object (RFC 8417 §2.2), else ``invalid_request``;
* ``iss`` names a configured transmitter, else ``invalid_issuer``;
* the signature verifies with that transmitter's keys and algorithms (never a key the SET
  names): no acceptable key is ``invalid_key``, a bad signature ``authentication_failed``;
* ``aud`` names this receiver, else ``invalid_audience``; an ``exp`` in the past or an
  ``iat`` more than 60 s ahead is ``invalid_request``.

Idempotency: ``(iss, jti)`` is recorded in the same transaction as the effect, so a
duplicate is acknowledged (202) and never applied twice, even across nodes.

Effects (everything else is acknowledged and recorded as ignored):

* CAEP ``session-revoked`` or RISC ``account-disabled`` for a *user* revokes every active
  session acting for that user (and their delegation subtrees: the rows are revoked with
  one ``session.revoked`` event, which every node's tailer applies);
* CAEP ``credential-change`` for an *agent* revokes its sessions.

Subjects resolve to users by ``iss_sub`` (``iss`` in ``user_issuers`` or Tessera's own
issuer; ``sub`` = user id or username) or ``email`` (an active user with that address);
to agents by ``iss_sub`` with Tessera's issuer or the transmitter's, ``sub`` = agent id or
name. ``complex`` subjects resolve through their ``user`` (or ``application``) member,
``aliases`` through any identifier.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from tessera.audit.record import ActorLayers, AuditEntry
from tessera.clock import Clock
from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.jws import JwksKeys, KeyLookup, parse_json_object, verify_jws_signature_only
from tessera.errors import ConfigError, TesseraError
from tessera.outbound import OutboundPolicy, OutboundRefused, check_url
from tessera.signals.caep import ACCOUNT_DISABLED, CREDENTIAL_CHANGE, SESSION_REVOKED, SET_TYP
from tessera.signals.model import SignalsStore
from tessera.tokens.peek import unverified_claim

log = logging.getLogger("tessera.signals")

MAX_SET_BYTES: Final = 64 * 1024
SKEW: Final = 60
ALGORITHMS: Final = {"ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256"}
WHERE: Final = "TESSERA_SSF_TRANSMITTERS"


class SetRejected(TesseraError):
    """RFC 8935 §2.4: the SET is refused; ``code`` is the RFC's ``err`` value."""

    status = 400
    title = "SET refused"


@dataclass(frozen=True)
class Transmitter:
    issuer: str
    keys: KeyLookup
    algorithms: tuple[str, ...]
    audience: frozenset[str]
    user_issuers: frozenset[str]


def transmitter_from_config(
    entry: Mapping[str, Any], base_dir: Path, *, allow_private: bool
) -> Transmitter:
    """One entry of the transmitters file; every mistake is a ``ConfigError``."""
    from tessera.tokens.issuers import RemoteJwks

    iss = entry.get("issuer")
    if not isinstance(iss, str) or not iss.startswith(("https://", "http://")):
        raise ConfigError(f"{WHERE}: each entry needs an http(s) issuer")
    aud = entry.get("audience")
    audience = [aud] if isinstance(aud, str) else aud
    if (
        not isinstance(audience, list)
        or not audience
        or not all(isinstance(a, str) for a in audience)
    ):
        raise ConfigError(f"{WHERE}: {iss} needs an audience (string or list)")
    algs = tuple(entry.get("algorithms") or ("ES256",))
    if not set(algs) <= ALGORITHMS:
        raise ConfigError(f"{WHERE}: {iss} lists an algorithm outside {sorted(ALGORITHMS)}")
    keys: KeyLookup
    if "jwks_uri" in entry:
        uri = str(entry["jwks_uri"])
        policy = OutboundPolicy(
            frozenset({(urlsplit(uri).hostname or "").lower()}), allow_private=allow_private
        )
        try:
            check_url(uri, policy)
        except OutboundRefused as exc:
            raise ConfigError(f"{WHERE}: jwks_uri of {iss} refused ({exc.detail})") from exc
        keys = RemoteJwks(uri, policy, min_refresh=5.0)
    else:
        if "jwks" in entry:
            doc = entry["jwks"]
        elif "jwks_file" in entry:
            try:
                doc = json.loads((base_dir / str(entry["jwks_file"])).read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{WHERE}: cannot read jwks_file of {iss}") from exc
        else:
            raise ConfigError(f"{WHERE}: {iss} needs jwks_uri, jwks or jwks_file")
        try:
            keys = JwksKeys.from_jwks(doc)
        except JwksInvalid as exc:
            raise ConfigError(f"{WHERE}: {iss} jwks invalid ({exc.detail})") from exc
    users = entry.get("user_issuers") or [iss]
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise ConfigError(f"{WHERE}: {iss} user_issuers must be a list of issuers")
    return Transmitter(iss, keys, algs, frozenset(audience), frozenset(users))


def load_transmitters(path: Path | None, *, allow_private: bool = False) -> list[Transmitter]:
    if path is None:
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{WHERE}: cannot read {path} as JSON") from exc
    if not isinstance(data, list):
        raise ConfigError(f"{WHERE}: the file must hold a JSON array")
    return [transmitter_from_config(e, path.parent, allow_private=allow_private) for e in data]


class SsfReceiver:
    def __init__(
        self,
        store: SignalsStore,
        clock: Clock,
        transmitters: Sequence[Transmitter],
        *,
        issuer: str,
        audit: Any,
    ) -> None:
        self._store = store
        self._clock = clock
        self._by_iss = {t.issuer: t for t in transmitters}
        self._issuer = issuer
        self._audit = audit

    @property
    def enabled(self) -> bool:
        return bool(self._by_iss)

    def receive(self, body: bytes, content_type: str | None, request_id: str | None = None) -> str:
        """RFC 8935 §2.2: verify and apply one pushed SET; the outcome (``applied``,
        ``ignored``, ``duplicate``) or ``SetRejected`` (recorded either way)."""
        iss: str | None = None
        try:
            token, iss = self._parse(body, content_type)
            transmitter = self._by_iss.get(iss)
            if transmitter is None:
                raise SetRejected(
                    "the SET issuer is not a configured transmitter", code="invalid_issuer"
                )
            claims = self._verify(token, transmitter)
            try:
                outcome = self._apply(transmitter, claims)
            except _Duplicate:
                outcome = "duplicate"  # acknowledged, not applied again
        except SetRejected as exc:
            self._record("ssf.set_rejected", iss, None, [], "failure", (exc.code,), request_id, exc)
            raise
        self._record(
            "ssf.set_received",
            iss,
            claims.get("jti"),
            list(claims["events"]),
            outcome,
            (),
            request_id,
            None,
        )
        return outcome

    def _parse(self, body: bytes, content_type: str | None) -> tuple[str, str]:
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media != "application/secevent+jwt":
            raise SetRejected("the body must be application/secevent+jwt", code="invalid_request")
        if len(body) > MAX_SET_BYTES:
            raise SetRejected("the SET is too large", code="invalid_request")
        try:
            token = body.decode("ascii").strip()
        except UnicodeDecodeError:
            raise SetRejected("the body is not a compact JWS", code="invalid_request") from None
        iss = unverified_claim(token, "iss")
        if not iss:
            raise SetRejected("the body is not a SET with an issuer", code="invalid_request")
        return token, iss

    def _verify(self, token: str, t: Transmitter) -> dict[str, Any]:
        try:
            verified = verify_jws_signature_only(token, keys=t.keys, algorithms=t.algorithms)
        except (TokenInvalid, JwksInvalid) as exc:
            detail = exc.detail or ""
            if "signature does not verify" in detail:
                raise SetRejected(
                    "the SET signature does not verify", code="authentication_failed", detail=detail
                ) from None
            if "no key" in detail or "alg" in detail or "key" in detail:
                raise SetRejected(
                    "the SET is not signed with an accepted key", code="invalid_key", detail=detail
                ) from None
            raise SetRejected(
                "the SET is malformed", code="invalid_request", detail=detail
            ) from None
        if verified.header.get("typ") != SET_TYP:
            raise SetRejected("the SET header typ must be secevent+jwt", code="invalid_request")
        try:
            claims = parse_json_object(verified.payload, "claims")
        except (TokenInvalid, ValueError):
            raise SetRejected("the SET claims are malformed", code="invalid_request") from None
        aud = claims.get("aud")
        auds = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
        if not all(isinstance(a, str) for a in auds) or not auds & t.audience:
            raise SetRejected("the SET audience is not this receiver", code="invalid_audience")
        now = self._clock.timestamp()
        jti, iat, events = claims.get("jti"), claims.get("iat"), claims.get("events")
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise SetRejected("the SET needs a jti", code="invalid_request")
        if not isinstance(iat, int | float) or isinstance(iat, bool) or iat > now + SKEW:
            raise SetRejected("the SET needs a valid iat", code="invalid_request")
        exp = claims.get("exp")
        if exp is not None and (not isinstance(exp, int | float) or exp < now - SKEW):
            raise SetRejected("the SET has expired", code="invalid_request")
        if (
            not isinstance(events, dict)
            or not events
            or len(events) > 16
            or not all(isinstance(k, str) and isinstance(v, dict) for k, v in events.items())
        ):
            raise SetRejected("the SET needs an events object", code="invalid_request")
        return claims

    # -- effects ----------------------------------------------------------------------------------

    def _apply(self, t: Transmitter, claims: Mapping[str, Any]) -> str:
        events: dict[str, Any] = claims["events"]
        sub_id = claims.get("sub_id")
        now = self._clock.now()
        with self._store.write() as tx:
            applied: list[str] = []
            for event_type, body in events.items():
                subject = sub_id if isinstance(sub_id, dict) else body.get("subject")
                if not isinstance(subject, dict):
                    continue
                name = event_type.rsplit("/", 1)[-1]
                if event_type in (SESSION_REVOKED, ACCOUNT_DISABLED):
                    who = self._user(tx, t, subject)
                    where = {"user_id": who.id} if who is not None else None
                elif event_type == CREDENTIAL_CHANGE:
                    who = self._agent(tx, t, subject)
                    where = {"agent_id": who.id} if who is not None else None
                else:
                    continue
                if who is None or where is None:
                    continue
                revoked = tx.sessions.revoke_where(**where, reason=f"ssf:{name}", now=now)
                applied.append(f"{who.id}: {len(revoked)} sessions revoked ({name})")
                if revoked:
                    reason = f"ssf {name} from {t.issuer}"[:200]
                    payload = {"sessions": revoked, "reason": reason}
                    tx.events.append("session.revoked", who.id, payload, "system")
            outcome = "applied: " + "; ".join(applied) if applied else "ignored"
            jti = str(claims["jti"])
            if not tx.signals.remember_received(t.issuer, jti, sorted(events), outcome, now):
                raise _Duplicate  # roll back: the first delivery already applied it
        return outcome

    def _identifiers(
        self, subject: Mapping[str, Any], members: tuple[str, ...]
    ) -> list[Mapping[str, Any]]:
        fmt = subject.get("format")
        if fmt == "complex":
            out: list[Mapping[str, Any]] = []
            for m in members:
                v = subject.get(m)
                if isinstance(v, Mapping):
                    out.extend(self._identifiers(v, members))
            return out
        if fmt == "aliases":
            ids = subject.get("identifiers")
            return [i for i in ids[:16] if isinstance(i, Mapping)] if isinstance(ids, list) else []
        return [subject]

    def _user(self, tx: Any, t: Transmitter, subject: Mapping[str, Any]) -> Any:
        for ident in self._identifiers(subject, ("user",)):
            fmt = ident.get("format")
            if fmt == "iss_sub" and (
                ident.get("iss") in t.user_issuers or ident.get("iss") == self._issuer
            ):
                user = tx.users.get(str(ident.get("sub", ""))[:128])
                if user is not None:
                    return user
            if fmt == "email" and isinstance(ident.get("email"), str):
                user = tx.signals.user_by_email(ident["email"][:320])
                if user is not None:
                    return user
        return None

    def _agent(self, tx: Any, t: Transmitter, subject: Mapping[str, Any]) -> Any:
        for ident in self._identifiers(subject, ("application", "user")):
            if ident.get("format") == "iss_sub" and ident.get("iss") in (self._issuer, t.issuer):
                agent = tx.agents.get(str(ident.get("sub", ""))[:128])
                if agent is not None:
                    return agent
        return None

    def _record(
        self,
        kind: str,
        iss: str | None,
        jti: Any,
        events: list[str],
        outcome: str,
        reasons: tuple[str, ...],
        request_id: str | None,
        exc: SetRejected | None,
    ) -> None:
        details: dict[str, Any] = {"iss": (iss or "")[:256], "events": events[:16]}
        if exc is not None:
            details["error"] = exc.message
            if exc.detail:
                details["detail"] = exc.detail[:200]
        try:
            self._audit.record(
                AuditEntry(
                    event_type=kind,
                    actor=ActorLayers(principal=f"ssf:{(iss or 'unknown')[:200]}"),
                    action="ssf.push",
                    resource="ssf:receiver",
                    outcome=outcome[:120],
                    reasons=reasons,
                    request_id=request_id,
                    jti=jti[:200] if isinstance(jti, str) else None,
                    details=details,
                )
            )
        except Exception as err:  # the answer stands; the log says the record is missing
            log.error("audit record for a received SET failed: %s", type(err).__name__)


class _Duplicate(Exception):
    pass
