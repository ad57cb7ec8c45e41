"""Tessera's error tree.

Only broken input or broken infrastructure raises; decisions and findings are values.
Every error carries a stable snake_case ``code`` and a public ``message`` that is safe to
show to a caller (never a secret, never a token). ``detail`` is for the audit record and
logs, never for the wire. Mapping to OAuth error JSON, problem+json or JSON-RPC happens
only in ``http/`` and ``gateway/``.

    TesseraError
    ├── ConfigError            invalid configuration; the process refuses to start
    ├── InvalidInput           malformed or out-of-range input (400)
    │   └── PayloadTooLarge    input over a size limit (413)
    ├── NotFound               the named thing does not exist (404)
    ├── Conflict               the change contradicts current state (409)
    ├── Unauthenticated        missing or bad credentials; one opaque message (401)
    ├── Forbidden              authenticated but not allowed (403)
    └── Unavailable            infrastructure cannot serve; fail closed (503)
        └── StoreUnavailable   the database cannot be reached or written
"""

from __future__ import annotations


class TesseraError(Exception):
    """Root of every error Tessera raises on purpose."""

    code: str = "tessera_error"
    status: int = 500
    title: str = "Internal error"

    def __init__(
        self, message: str | None = None, *, code: str | None = None, detail: str | None = None
    ) -> None:
        self.message = message or self.title
        if code is not None:
            self.code = code
        # detail is for audit records and logs only; never sent to a caller.
        self.detail = detail
        super().__init__(self.message)


class ConfigError(TesseraError):
    code = "config_error"
    status = 500
    title = "Invalid configuration"


class InvalidInput(TesseraError):
    code = "invalid_input"
    status = 400
    title = "Invalid input"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    status = 413
    title = "Payload too large"


class NotFound(TesseraError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(TesseraError):
    code = "conflict"
    status = 409
    title = "Conflict"


class Unauthenticated(TesseraError):
    code = "unauthenticated"
    status = 401
    title = "Authentication required"


class Forbidden(TesseraError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class Unavailable(TesseraError):
    code = "unavailable"
    status = 503
    title = "Service unavailable"


class StoreUnavailable(Unavailable):
    code = "store_unavailable"
    title = "Store unavailable"
