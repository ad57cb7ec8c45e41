"""Development-only user tokens (``tessera dev user-token``).

Signed with the development issuer's own key (DESIGN 6b), ``iss`` = ``<issuer>/dev-users``,
``aud`` = the Tessera issuer, ``sub`` = the user id. Tessera trusts this issuer only when
``TESSERA_DEV_MODE`` is on; in production, user tokens come from configured issuers.
"""

from __future__ import annotations

import secrets

from tessera.crypto.jws import sign_jwt
from tessera.crypto.keys import SigningKey
from tessera.tokens.issuers import DEV_ISSUER_SUFFIX


def mint_dev_user_token(
    key: SigningKey, issuer: str, user_id: str, *, now: float, lifetime: int = 3600
) -> str:
    iat = int(now)
    return sign_jwt(
        {
            "iss": issuer + DEV_ISSUER_SUFFIX,
            "sub": user_id,
            "aud": issuer,
            "iat": iat,
            "exp": iat + lifetime,
            "jti": secrets.token_urlsafe(12),
            "tessera_dev": True,
        },
        key,
        typ="JWT",
    )
