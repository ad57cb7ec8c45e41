"""Token service rules: grants, exchange and delegation, session claims (DESIGN 2A, 2C, 4).

Pure logic: no HTTP, no SQL, no crypto calls. The error raised by these rules is
:class:`OAuthError` (an RFC 6749 error code, a public description, a private detail); a
malformed verified token raises :class:`SessionClaimsError`.

    TesseraError
    ├── OAuthError              refusal with an OAuth error code (token endpoint)
    └── SessionClaimsError    a verified token whose claims are not a valid session
"""

from tessera.tokens.claims import (
    SessionClaims,
    SessionClaimsError,
    build_session_claims,
    parse_session_claims,
)
from tessera.tokens.delegation import (
    ChildGrant,
    act_chain,
    derive_child_grant,
    nest_act,
)
from tessera.tokens.grant import SessionGrant, compute_session_grant
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.rar import SESSION_DETAILS_TYPE, SessionRequest, parse_session_request

__all__ = [
    "SESSION_DETAILS_TYPE",
    "ChildGrant",
    "OAuthError",
    "SessionClaims",
    "SessionClaimsError",
    "SessionGrant",
    "SessionRequest",
    "act_chain",
    "build_session_claims",
    "compute_session_grant",
    "derive_child_grant",
    "nest_act",
    "parse_session_claims",
    "parse_session_request",
]
