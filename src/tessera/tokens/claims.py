"""The session token's claim set (DESIGN 4; RFC 9068 §2.2, RFC 8693 §4, RFC 9449 §6).

:func:`build_session_claims` turns a grant into the claim dict that ``crypto/`` signs;
:func:`parse_session_claims` turns a *verified* claim dict back into a typed
:class:`SessionClaims`, refusing anything malformed or inconsistent. Signature, ``aud``,
``exp`` and ``iat`` against the clock are checked by the verifier, not here.

Shapes decided here (DESIGN 4 is silent):

- ``aud`` is a string for one audience and a sorted array for several (RFC 9068 §2.2).
- ``scope`` is present only when scopes are given (space-separated, sorted).
- ``cnf`` is present only for DPoP-bound tokens (agents with ``dpop_required: false``).
- The ``tessera_session`` object also carries ``max_depth``, the deepest level sessions
  derived from this one may reach (RFC 9396 §7 lets the granted details differ from the
  requested ones).
- ``act`` is absent for an autonomous root token (``sub`` = ``client_id``); an on-behalf-of
  root carries ``{"sub": client_id}``; every derived token nests one more level. Hence
  ``act`` chain length is ``depth`` or ``depth + 1``, and its outermost ``sub`` is
  ``client_id``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from tessera.errors import TesseraError
from tessera.identity.ceiling import (
    MAX_DELEGATION_DEPTH,
    MAX_SESSION_LIFETIME,
    is_data_scope,
    is_model_digest,
    is_tool,
)
from tessera.tokens.delegation import act_chain, act_from_chain
from tessera.tokens.grant import SessionGrant
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.rar import (
    MAX_LIST_ITEMS,
    SESSION_DETAILS_TYPE,
    parse_audience,
    parse_budgets,
    session_details_object,
)

MAX_CLAIM_STRING: Final = 256
_JKT = re.compile(r"^[A-Za-z0-9_-]{43}$")
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
_REQUIRED = frozenset(
    {
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "client_id",
        "sid",
        "operator",
        "model",
        "authorization_details",
        "depth",
    }
)
_OPTIONAL = frozenset({"scope", "cnf", "parent", "act", "nbf"})
_DETAILS_MEMBERS = frozenset({"type", "tools", "deny", "data_scope", "budgets", "max_depth"})


class SessionClaimsError(TesseraError):
    """A verified token whose claims do not form a valid session. One opaque message."""

    code = "invalid_token"
    status = 401
    title = "Invalid token"


@dataclass(frozen=True)
class SessionClaims:
    """Typed view of a session token; ``grant`` holds what the session may do."""

    issuer: str
    subject: str
    client_id: str
    jti: str
    iat: int
    exp: int
    sid: str
    operator: str
    model_id: str
    grant: SessionGrant
    scopes: frozenset[str] = frozenset()
    jkt: str | None = None
    parent: str | None = None
    act: Mapping[str, Any] | None = field(default=None, hash=False)

    @property
    def audience(self) -> frozenset[str]:
        return self.grant.audience

    @property
    def depth(self) -> int:
        return self.grant.depth

    @property
    def actors(self) -> tuple[str, ...]:
        """RFC 8693 §4.1 actors, current actor first."""
        return tuple(act_chain(self.act))

    @property
    def delegated(self) -> bool:
        """True for a derived token (depth > 0)."""
        return self.grant.depth > 0


def build_session_claims(
    grant: SessionGrant,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    jti: str,
    iat: int,
    sid: str,
    operator: str,
    model_id: str,
    jkt: str | None,
    act: Mapping[str, Any] | None = None,
    parent: str | None = None,
    scopes: Collection[str] = (),
) -> dict[str, Any]:
    """The DESIGN 4 claim set, ``exp`` = ``iat`` + ``grant.lifetime``.

    The result is read back with :func:`parse_session_claims` before it is returned, so
    Tessera never signs a token it would refuse to read (raises ``SessionClaimsError``).
    """
    audience = sorted(grant.audience)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience[0] if len(audience) == 1 else audience,
        "exp": iat + grant.lifetime,
        "iat": iat,
        "jti": jti,
        "client_id": client_id,
        "sid": sid,
        "operator": operator,
        "model": {"id": model_id, "digest": grant.model_digest},
        "authorization_details": [
            session_details_object(
                tools=grant.tools,
                deny=grant.deny,
                data_scope=grant.data_scope,
                budgets=grant.budgets,
                extra={"max_depth": grant.max_depth},
            )
        ],
        "depth": grant.depth,
    }
    if scopes:
        claims["scope"] = " ".join(sorted(set(scopes)))
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    if parent is not None:
        claims["parent"] = parent
    if act is not None:
        claims["act"] = act_from_chain(act_chain(act))
    parse_session_claims(claims)
    return claims


def _fail(detail: str) -> SessionClaimsError:
    return SessionClaimsError(detail=detail)


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_STRING:
        raise _fail(f"{name} must be a non-empty string")
    return value


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"{name} must be an integer from {low} to {high}")
    return value


def _items(details: Mapping[str, Any], name: str, valid: Any) -> frozenset[str]:
    value = details.get(name)
    if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS * (MAX_DELEGATION_DEPTH + 1):
        raise _fail(f"authorization_details.{name} must be an array")
    if not all(isinstance(item, str) and valid(item) for item in value):
        raise _fail(f"authorization_details.{name} has a malformed item")
    return frozenset(value)


def _details(value: Any) -> dict[str, Any]:
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], Mapping):
        raise _fail("authorization_details must hold exactly one object")
    details = value[0]
    if details.get("type") != SESSION_DETAILS_TYPE or set(details) != _DETAILS_MEMBERS:
        raise _fail("authorization_details is not a complete tessera_session object")
    try:
        budgets = parse_budgets(details.get("budgets"))
    except OAuthError as exc:
        raise _fail(f"budgets: {exc.message}") from None
    return {
        "tools": _items(details, "tools", is_tool),
        "deny": _items(details, "deny", is_tool),
        "data_scope": _items(details, "data_scope", is_data_scope),
        "budgets": budgets,
        "max_depth": _integer(details.get("max_depth"), "max_depth", 0, MAX_DELEGATION_DEPTH),
    }


def _optional_claims(claims: Mapping[str, Any]) -> tuple[frozenset[str], str | None, str | None]:
    scopes: frozenset[str] = frozenset()
    if "scope" in claims:
        scope = claims["scope"]
        if not isinstance(scope, str) or not all(
            _SCOPE_TOKEN.fullmatch(s) for s in scope.split(" ")
        ):
            raise _fail("scope must be space-separated scope tokens")
        scopes = frozenset(scope.split(" "))
    jkt: str | None = None
    if "cnf" in claims:
        cnf = claims["cnf"]
        if (
            not isinstance(cnf, Mapping)
            or set(cnf) != {"jkt"}
            or not isinstance(cnf["jkt"], str)
            or not _JKT.fullmatch(cnf["jkt"])
        ):
            raise _fail("cnf must be {jkt: SHA-256 thumbprint}")
        jkt = cnf["jkt"]
    parent = _string(claims, "parent") if "parent" in claims else None
    return scopes, jkt, parent


def parse_session_claims(claims: Mapping[str, Any]) -> SessionClaims:
    """Validate a verified claim set (DESIGN 4) and return :class:`SessionClaims`.

    Raises ``SessionClaimsError`` (one public message; the reason in ``detail``).
    """
    if not isinstance(claims, Mapping):
        raise _fail("claims must be an object")
    missing = sorted(_REQUIRED - set(claims))
    if missing:
        raise _fail(f"missing claim {missing[0]}")
    unknown = sorted(set(claims) - _REQUIRED - _OPTIONAL)
    if unknown:
        raise _fail(f"unknown claim {unknown[0][:64]}")
    issuer, subject = _string(claims, "iss"), _string(claims, "sub")
    client_id, jti = _string(claims, "client_id"), _string(claims, "jti")
    sid, operator = _string(claims, "sid"), _string(claims, "operator")
    try:
        audience = parse_audience(claims["aud"])
    except OAuthError:
        raise _fail("aud is malformed") from None
    if not audience or (isinstance(claims["aud"], list) and len(claims["aud"]) != len(audience)):
        raise _fail("aud must name at least one distinct audience")
    iat = _integer(claims["iat"], "iat", 1, 2**53)
    exp = _integer(claims["exp"], "exp", iat + 1, iat + MAX_SESSION_LIFETIME)
    if "nbf" in claims:
        _integer(claims["nbf"], "nbf", 0, exp)
    model = claims["model"]
    if (
        not isinstance(model, Mapping)
        or set(model) != {"id", "digest"}
        or not isinstance(model["digest"], str)
        or not is_model_digest(model["digest"])
    ):
        raise _fail("model must be {id, digest}")
    model_id = _string(model, "id")
    details = _details(claims["authorization_details"])
    depth = _integer(claims["depth"], "depth", 0, details["max_depth"])
    scopes, jkt, parent = _optional_claims(claims)
    try:
        chain = act_chain(claims.get("act"))
    except OAuthError as exc:
        raise _fail(exc.detail or "act is malformed") from None
    _check_lineage(depth=depth, chain=chain, subject=subject, client_id=client_id, parent=parent)
    grant = SessionGrant(
        tools=details["tools"],
        deny=details["deny"],
        data_scope=details["data_scope"],
        budgets=details["budgets"],
        audience=audience,
        lifetime=exp - iat,
        model_digest=model["digest"],
        depth=depth,
        max_depth=details["max_depth"],
    )
    act = act_from_chain(chain)
    return SessionClaims(
        issuer=issuer,
        subject=subject,
        client_id=client_id,
        jti=jti,
        iat=iat,
        exp=exp,
        sid=sid,
        operator=operator,
        model_id=model_id,
        grant=grant,
        scopes=scopes,
        jkt=jkt,
        parent=parent,
        act=None if act is None else MappingProxyType(act),
    )


def _check_lineage(
    *, depth: int, chain: list[str], subject: str, client_id: str, parent: str | None
) -> None:
    # INVARIANT: a derived token names its parent; a root token names none.
    if (depth > 0) != (parent is not None):
        raise _fail("parent must be present exactly when depth > 0")
    if depth == 0:
        if not chain and subject != client_id:
            raise _fail("an autonomous root token has sub == client_id")
        if chain and (chain != [client_id] or subject == client_id):
            raise _fail("an on-behalf-of root token has act == {sub: client_id}")
        return
    if len(chain) not in (depth, depth + 1) or chain[0] != client_id:
        raise _fail("act chain does not match depth and client_id")
