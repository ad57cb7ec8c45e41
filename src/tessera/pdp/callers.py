"""Who may ask the PDP (DESIGN 6b): registered services, with a Tessera service token
carrying scope ``pdp.evaluate`` (docs/decisions.md 12) or, for interop, an API key bound
to the service (``Authorization: Bearer tsk_...``, stored as ``hash_token(key)``).

Verified service tokens are cached by hash until they expire; API keys are looked up
again after ``API_KEY_TTL`` seconds. Subscribed to the node's event tailer
(``on_events``), the cache is also emptied by every service, credential and signing-key
event, so disabling a key or a service takes effect as soon as the node has read the
change from the log (and after ``API_KEY_TTL`` at the latest for API keys).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol

from tessera.crypto.errors import JwksInvalid, TokenInvalid
from tessera.crypto.hashing import hash_token
from tessera.crypto.jws import KeyLookup, verify_jwt
from tessera.errors import Forbidden, Unauthenticated
from tessera.pdp.agents import Caller

PDP_SCOPE: Final = "pdp.evaluate"
API_KEY_PREFIX: Final = "tsk_"
API_KEY_TTL: Final = 5.0
MAX_CACHE: Final = 10_000
# Events after which a cached caller may no longer be valid.
CALLER_EVENT_PREFIXES: Final = ("service.", "credential.", "key.")


class CallerStore(Protocol):
    def read(self) -> AbstractContextManager[Any]: ...


class ServiceAuthenticator:
    def __init__(
        self, keys: KeyLookup, issuer: str, store: CallerStore, *, scope: str = PDP_SCOPE
    ) -> None:
        self._scope = scope  # pdp.evaluate here; ssf.manage for SSF stream management
        self._keys = keys
        self._issuer = issuer
        self._store = store
        self._cache: dict[str, tuple[Caller, float]] = {}
        self._lock = threading.Lock()
        self._epoch = 0

    def on_events(self, _tx: Any, events: Sequence[Any]) -> None:
        """Event tailer subscriber: forget every caller when a service, credential or
        signing key changed."""
        if any(e.type.startswith(CALLER_EVENT_PREFIXES) for e in events):
            with self._lock:
                self._cache.clear()
                self._epoch += 1

    @staticmethod
    def _credential(authorization: str | None) -> str:
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or len(credential) > 8192:
            raise Unauthenticated("a service token or API key is required")
        return credential

    def cached(self, authorization: str | None, now: float) -> Caller | None:
        """The calling service when it was verified before and is still valid, without
        reading the store (an event loop may call this); ``None`` means "call
        ``authenticate``". A malformed header raises ``Unauthenticated`` here already."""
        hit = self._cache.get(hash_token(self._credential(authorization)))
        return hit[0] if hit is not None and hit[1] > now else None

    def authenticate(self, authorization: str | None, now: float) -> Caller:
        """The calling service, or ``Unauthenticated`` (401) / ``Forbidden`` (403)."""
        credential = self._credential(authorization)
        key = hash_token(credential)
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        epoch = self._epoch
        if credential.startswith(API_KEY_PREFIX):
            caller, until = self._api_key(key), now + API_KEY_TTL
        else:
            caller, until = self._token(credential, now)
        with self._lock:
            # INVARIANT: an answer read before an invalidating event is never kept.
            if epoch == self._epoch:
                if len(self._cache) >= MAX_CACHE:
                    self._cache.clear()
                self._cache[key] = (caller, until)
        return caller

    def _service(self, tx: Any, service_id: str) -> Any:
        svc = tx.services.get(service_id)
        if svc is None or svc.status != "active":
            raise Unauthenticated("the caller is not an active service")
        if self._scope not in svc.scopes:
            raise Forbidden(f"the {self._scope} scope is required")
        return svc

    def _api_key(self, key_hash: str) -> Caller:
        with self._store.read() as tx:
            cred = tx.credentials.find_by_secret_hash(key_hash)
            if (
                cred is None
                or cred.kind != "api_key"
                or cred.owner_kind != "service"
                or cred.status != "active"
            ):
                raise Unauthenticated("the credential is not valid")
            svc = self._service(tx, cred.owner_id)
        return Caller(svc.id, svc.name, "api_key")

    def _token(self, token: str, now: float) -> tuple[Caller, float]:
        try:
            verified = verify_jwt(
                token,
                keys=self._keys,
                algorithms=("ES256", "EdDSA"),
                typ="at+jwt",
                issuer=self._issuer,
                audience=self._issuer,
                now=now,
                require=("exp", "iat", "sub", "scope", "token_use"),
            )
        except (TokenInvalid, JwksInvalid):
            raise Unauthenticated("the credential is not valid") from None
        claims = verified.claims
        if claims.get("token_use") != "service" or claims.get("sub") != claims.get("client_id"):
            raise Unauthenticated("the credential is not valid")
        scopes = str(claims.get("scope", "")).split()
        if self._scope not in scopes:
            raise Forbidden(f"the {self._scope} scope is required")
        with self._store.read() as tx:
            svc = self._service(tx, str(claims["sub"]))
        return Caller(svc.id, svc.name, "token"), float(claims["exp"])
