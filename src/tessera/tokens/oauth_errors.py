"""OAuth error values raised by the token service rules.

One type, :class:`OAuthError`, carries a registered error code (RFC 6749 §5.2, RFC 8693 §2.2.2,
RFC 8707 §2, RFC 9396 §5, RFC 9449 §5 and §8), the HTTP status that goes with it, a public
``error_description`` and a private ``detail``. The split follows the error tree in
``tessera.errors``: the description is written for the client and never contains a secret,
a token or a policy; ``detail`` goes to the audit record only. The wire body is built in
``http/``, not here.
"""

from __future__ import annotations

from typing import Final, Literal

from tessera.errors import TesseraError

OAuthErrorCode = Literal[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "invalid_authorization_details",
    "invalid_dpop_proof",
    "use_dpop_nonce",
    "unsupported_token_type",
    # CIBA Core 1.0 §13 (backchannel endpoint) and §11 (token endpoint)
    "authorization_pending",
    "slow_down",
    "expired_token",
    "access_denied",
    "unknown_user_id",
    "invalid_binding_message",
]

# Status codes at the token endpoint. RFC 6749 §5.2 uses 400 for everything except a failed
# client authentication (401). RFC 9449 §5 and §8 answer DPoP failures at the token endpoint
# with 400 as well; a resource server uses 401 and passes ``status`` explicitly.
OAUTH_ERROR_STATUS: Final[dict[str, int]] = {
    "invalid_request": 400,
    "invalid_client": 401,
    "invalid_grant": 400,
    "unauthorized_client": 400,
    "unsupported_grant_type": 400,
    "invalid_scope": 400,
    "invalid_target": 400,
    "invalid_authorization_details": 400,
    "invalid_dpop_proof": 400,
    "use_dpop_nonce": 400,
    "unsupported_token_type": 400,  # RFC 7009 §2.2.1
    "authorization_pending": 400,
    "slow_down": 400,
    "expired_token": 400,
    "access_denied": 400,  # CIBA §11; the backchannel endpoint answers 403 (§13)
    "unknown_user_id": 400,
    "invalid_binding_message": 400,
}

_DEFAULT_DESCRIPTION: Final[dict[str, str]] = {
    "invalid_request": "The request is malformed",
    "invalid_client": "Client authentication failed",
    "invalid_grant": "The grant is invalid",
    "unauthorized_client": "The client is not authorized for this request",
    "unsupported_grant_type": "The grant type is not supported",
    "invalid_scope": "The requested scope is invalid",
    "invalid_target": "The requested resource or audience is invalid",
    "invalid_authorization_details": "The authorization details are invalid",
    "invalid_dpop_proof": "The DPoP proof is invalid",
    "use_dpop_nonce": "A DPoP nonce is required",
    "unsupported_token_type": "The token type is not supported",
    "authorization_pending": "The approval is still pending",
    "slow_down": "Poll less often",
    "expired_token": "The approval request has expired",
    "access_denied": "The request was denied",
    "unknown_user_id": "The hint does not name an approver of this request",
    "invalid_binding_message": "The binding message is invalid",
}

MAX_DESCRIPTION_LENGTH: Final = 300


def safe_description(text: str) -> str:
    """Restrict to the RFC 6749 §5.2 ``error_description`` character set and a length cap.

    Allowed: %x20-21 / %x23-5B / %x5D-7E, i.e. printable ASCII without ``"`` and ``\\``.
    Anything else becomes ``?`` so an echoed input can never break out of the JSON string
    or smuggle control characters into logs.
    """
    cleaned = "".join(ch if (" " <= ch <= "~" and ch not in {'"', "\\"}) else "?" for ch in text)
    if len(cleaned) > MAX_DESCRIPTION_LENGTH:
        cleaned = cleaned[: MAX_DESCRIPTION_LENGTH - 3] + "..."
    return cleaned


class OAuthError(TesseraError):
    """A refusal with a registered OAuth error code.

    ``code`` is the OAuth ``error`` value; ``message`` (also ``error_description``) is public;
    ``detail`` is for the audit record and must never be sent to the caller.
    """

    code = "invalid_request"
    status = 400
    title = "Invalid request"

    def __init__(
        self,
        error: OAuthErrorCode,
        description: str | None = None,
        *,
        detail: str | None = None,
        status: int | None = None,
    ) -> None:
        if error not in OAUTH_ERROR_STATUS:
            # A programming error, not input: refuse rather than emit an unregistered code.
            raise TesseraError(
                "unknown OAuth error code", code="internal_error", detail=f"OAuthError({error!r})"
            )
        public = safe_description(description or _DEFAULT_DESCRIPTION[error])
        super().__init__(public, code=error, detail=detail)
        self.status = status if status is not None else OAUTH_ERROR_STATUS[error]

    @property
    def error(self) -> str:
        """The RFC 6749 §5.2 ``error`` value."""
        return self.code

    @property
    def error_description(self) -> str:
        """The public, sanitized description (RFC 6749 §5.2)."""
        return self.message

    def __repr__(self) -> str:
        # detail is deliberately left out so a repr in a log line cannot leak it.
        return f"OAuthError({self.code!r}, {self.message!r}, status={self.status})"
