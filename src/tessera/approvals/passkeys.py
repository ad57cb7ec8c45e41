"""Approvers' passkeys (issue 8): WebAuthn Level 3 registration (§7.1) through a one-time
enrollment link, sign-in to the approver console (§7.2), and one assertion per approval
decision whose challenge is derived from the request's binding data, so a stolen browser
session cannot approve anything (it has no authenticator).

Challenges are stateless: ``ts (8 bytes) ‖ random (16) ‖ HMAC(key, purpose ‖ binding ‖ ts ‖
random)[:16]``, valid 5 minutes, used once (replay table kind ``webauthn``), so any node of a
cluster can verify them. A decision's challenge is ``approval_challenge(auth_req_id,
argument_hash, decision, note, nonce)`` with such a nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import webauthn
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tessera.approvals.model import approval_challenge
from tessera.approvals.service import ApprovalService
from tessera.clock import Clock
from tessera.crypto.hashing import hash_token, new_secret
from tessera.errors import InvalidInput, NotFound, Unauthenticated
from tessera.identity.model import UserStatus
from tessera.store.sql_approvals import SqlApprovalRepo

CHALLENGE_TTL: Final = 300
ENROLL_TTL: Final = 24 * 3600
SESSION_TTL: Final = 3600
MAX_CREDENTIAL_JSON: Final = 16_384


@dataclass(frozen=True)
class ConsoleSession:
    user_id: str
    username: str
    method: str  # passkey | dev


class PasskeyError(Unauthenticated):
    code = "passkey_invalid"
    title = "Passkey verification failed"


class Passkeys:
    def __init__(
        self,
        store: Any,
        clock: Clock,
        approvals: ApprovalService,
        *,
        issuer: str,
        key: bytes,
        rp_name: str = "Tessera approvals",
    ) -> None:
        self._store = store
        self._clock = clock
        self._approvals = approvals
        self.origin = issuer
        self.rp_id = urlsplit(issuer).hostname or "localhost"
        self._key = key
        self._rp_name = rp_name

    # -- stateless challenges ------------------------------------------------------------

    def _nonce(self, purpose: str, binding: str) -> bytes:
        ts = struct.pack(">Q", int(self._clock.timestamp()))
        rnd = secrets.token_bytes(16)
        mac = hmac.new(self._key, purpose.encode() + b"|" + binding.encode() + ts + rnd, "sha256")
        return ts + rnd + mac.digest()[:16]

    def _check_nonce(self, raw: bytes, purpose: str, binding: str) -> None:
        if len(raw) != 40:
            raise PasskeyError(detail="challenge has the wrong length")
        ts, rnd, mac = raw[:8], raw[8:24], raw[24:]
        want = hmac.new(self._key, purpose.encode() + b"|" + binding.encode() + ts + rnd, "sha256")
        if not hmac.compare_digest(want.digest()[:16], mac):
            raise PasskeyError(detail="challenge was not issued for this")
        age = self._clock.timestamp() - struct.unpack(">Q", ts)[0]
        if not -60 <= age <= CHALLENGE_TTL:
            raise PasskeyError(detail="challenge expired")
        expires = datetime.fromtimestamp(struct.unpack(">Q", ts)[0] + CHALLENGE_TTL + 60, UTC)
        with self._store.write() as tx:
            if not tx.replay.use_once("webauthn", bytes_to_base64url(raw), expires):
                raise PasskeyError(detail="challenge already used")

    @staticmethod
    def _credential(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or len(json.dumps(body)) > MAX_CREDENTIAL_JSON:
            raise InvalidInput("credential must be a WebAuthn PublicKeyCredential JSON object")
        return body

    @staticmethod
    def _client_challenge(credential: dict[str, Any]) -> bytes:
        try:
            cdj = base64url_to_bytes(credential["response"]["clientDataJSON"])
            return base64url_to_bytes(json.loads(cdj)["challenge"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PasskeyError(detail="clientDataJSON is malformed") from exc

    # -- enrollment ----------------------------------------------------------------------

    def enroll_link(self, user_ref: str, *, actor: str) -> tuple[str, datetime]:
        """``tessera approvals enroll-link USER``: a one-time link to register a passkey."""
        token = new_secret("tenr_")
        now = self._clock.now()
        expires = now + timedelta(seconds=ENROLL_TTL)
        with self._store.write() as tx:
            user = tx.users.get(user_ref)
            if user is None or user.status != UserStatus.ACTIVE:
                raise NotFound(f"no active user {user_ref!r}")
            SqlApprovalRepo(tx.connection).add_enrollment(
                hash_token(token), user.id, actor, now, expires
            )
            tx.events.append("approver.enrollment_issued", user.id, {"user": user.id}, actor)
        return f"{self.origin}/console/enroll/{token}", expires

    def enrolling(self, token: str) -> Any:
        with self._store.read() as tx:
            uid = SqlApprovalRepo(tx.connection).enrollment(hash_token(token), self._clock.now())
            user = tx.users.get(uid) if uid else None
        if user is None:
            raise PasskeyError("the enrollment link is not valid")
        return user

    def registration_options(self, token: str) -> str:
        """WebAuthn §5.4 creation options (discoverable credential, user verification)."""
        user = self.enrolling(token)
        with self._store.read() as tx:
            existing = SqlApprovalRepo(tx.connection).passkeys_for(user.id)
        options = webauthn.generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self._rp_name,
            user_name=user.username,
            user_id=user.id.encode(),
            user_display_name=user.display_name,
            challenge=self._nonce("register", hash_token(token)),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=base64url_to_bytes(r.credential_id))
                for r in existing
            ],
        )
        return webauthn.options_to_json(options)

    def register(self, token: str, body: Any) -> str:
        """WebAuthn §7.1: verify the new credential, spend the link, open a session."""
        credential = self._credential(body)
        user = self.enrolling(token)
        challenge = self._client_challenge(credential)
        self._check_nonce(challenge, "register", hash_token(token))
        try:
            verified = webauthn.verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                require_user_verification=True,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
            raise PasskeyError(detail=f"registration: {str(exc)[:200]}") from None
        now = self._clock.now()
        with self._store.write() as tx:
            repo = SqlApprovalRepo(tx.connection)
            if not repo.use_enrollment(hash_token(token), now):
                raise PasskeyError("the enrollment link is not valid")
            cred_id = bytes_to_base64url(verified.credential_id)
            if repo.passkey(cred_id) is not None:
                raise PasskeyError("this passkey is already registered")
            repo.add_passkey(
                cred_id, user.id, verified.credential_public_key, verified.sign_count, now
            )
            tx.events.append("approver.passkey_registered", user.id, {"user": user.id}, user.id)
        return self._open_session(user.id, "passkey")

    # -- sign-in -------------------------------------------------------------------------

    def login_options(self) -> str:
        options = webauthn.generate_authentication_options(
            rp_id=self.rp_id,
            challenge=self._nonce("login", ""),
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        return webauthn.options_to_json(options)

    def login(self, body: Any) -> str:
        credential = self._credential(body)
        challenge = self._client_challenge(credential)
        self._check_nonce(challenge, "login", "")
        user_id = self._assert(credential, challenge)
        return self._open_session(user_id, "passkey")

    def _assert(self, credential: dict[str, Any], challenge: bytes) -> str:
        """WebAuthn §7.2 over a stored passkey; returns its user id."""
        cred_id = str(credential.get("id") or credential.get("rawId") or "")
        with self._store.read() as tx:
            row = SqlApprovalRepo(tx.connection).passkey(cred_id)
            user = tx.users.get(row.user_id) if row is not None else None
        if row is None or user is None or user.status != UserStatus.ACTIVE:
            raise PasskeyError(detail="unknown passkey")
        try:
            verified = webauthn.verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=row.public_key,
                credential_current_sign_count=int(row.sign_count),
                require_user_verification=True,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
            raise PasskeyError(detail=f"assertion: {str(exc)[:200]}") from None
        with self._store.write() as tx:
            if not SqlApprovalRepo(tx.connection).use_passkey(
                cred_id, int(row.sign_count), int(verified.new_sign_count), self._clock.now()
            ):
                raise PasskeyError(detail="signature counter raced")
        return str(row.user_id)

    # -- console sessions ----------------------------------------------------------------

    def _open_session(self, user_id: str, method: str) -> str:
        token = new_secret("tapp_")
        now = self._clock.now()
        with self._store.write() as tx:
            SqlApprovalRepo(tx.connection).add_session(
                hash_token(token), user_id, method, now, now + timedelta(seconds=SESSION_TTL)
            )
        return token

    def dev_session(self, user_id: str) -> str:
        """Development only (the caller checks dev mode): a session from a dev user token."""
        return self._open_session(user_id, "dev")

    def session(self, token: str | None) -> ConsoleSession:
        if not token or len(token) > 200:
            raise Unauthenticated("sign in with your passkey")
        with self._store.read() as tx:
            found = SqlApprovalRepo(tx.connection).session(hash_token(token), self._clock.now())
            user = tx.users.get(found[0]) if found else None
        if found is None or user is None or user.status != UserStatus.ACTIVE:
            raise Unauthenticated("sign in with your passkey")
        return ConsoleSession(user.id, user.username, found[1])

    def logout(self, token: str) -> None:
        with self._store.write() as tx:
            SqlApprovalRepo(tx.connection).end_session(hash_token(token))

    # -- one assertion per decision ------------------------------------------------------

    def decision_options(
        self, session: ConsoleSession, auth_req_id: str, decision: str, note: str
    ) -> dict[str, Any]:
        """Request options whose challenge binds auth_req_id, argument hash, decision and
        note (``approval_challenge``); ``nonce`` must come back with the assertion."""
        req = self._approvals.get(auth_req_id)
        nonce = bytes_to_base64url(self._nonce("decide", f"{session.user_id}|{auth_req_id}"))
        challenge = approval_challenge(auth_req_id, req.argument_hash, decision, note, nonce)
        with self._store.read() as tx:
            keys = SqlApprovalRepo(tx.connection).passkeys_for(session.user_id)
        options = webauthn.generate_authentication_options(
            rp_id=self.rp_id,
            challenge=challenge,
            allow_credentials=[
                PublicKeyCredentialDescriptor(id=base64url_to_bytes(k.credential_id)) for k in keys
            ],
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        return {"nonce": nonce, "publicKey": json.loads(webauthn.options_to_json(options))}

    def decide(
        self,
        session: ConsoleSession,
        auth_req_id: str,
        decision: str,
        note: str,
        nonce: str,
        body: Any,
    ) -> Any:
        """Verify the decision's assertion, then record the vote as ``passkey``. The passkey
        must belong to the signed-in approver."""
        credential = self._credential(body)
        req = self._approvals.get(auth_req_id)
        try:
            raw_nonce = base64url_to_bytes(nonce)
        except (ValueError, TypeError):
            raise PasskeyError(detail="nonce is malformed") from None
        expected = approval_challenge(auth_req_id, req.argument_hash, decision, note, nonce)
        if not hmac.compare_digest(self._client_challenge(credential), expected):
            raise PasskeyError(detail="the assertion is not over this decision")
        self._check_nonce(raw_nonce, "decide", f"{session.user_id}|{auth_req_id}")
        owner = self._assert(credential, expected)
        if owner != session.user_id:
            raise PasskeyError(detail="the passkey belongs to someone else")
        return self._approvals.decide(auth_req_id, owner, decision, note, method="passkey")  # type: ignore[arg-type]


def console_key(kek: bytes) -> bytes:
    """The HMAC key of console challenges, derived from the shared KEK (all nodes agree)."""
    return hmac.new(kek, b"tessera approvals webauthn v1", hashlib.sha256).digest()
