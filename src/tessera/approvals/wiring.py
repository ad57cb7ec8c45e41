"""Wiring of the approvals part (called once from ``app.build``, after the token service):
the CIBA endpoints (also the PDP's one-shot token port), passkeys and delivery around the
``ApprovalService`` that the identity cascade already holds."""

from __future__ import annotations

import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tessera.approvals.ciba import CibaEndpoints
from tessera.approvals.delivery import ApprovalDelivery
from tessera.approvals.passkeys import Passkeys, console_key
from tessera.approvals.service import ApprovalService
from tessera.errors import Unavailable


@dataclass
class ApprovalEdges:
    """What the HTTP and CLI edges of approvals use besides ``Tessera.approvals``."""

    ciba: CibaEndpoints
    passkeys: Passkeys
    delivery: ApprovalDelivery
    dev_issuers: Any  # TrustedIssuers of the development user-token issuer, or None


class NotificationSeal:
    """AES-256-GCM for ``client_notification_token`` at rest: Tessera must send it back to
    the client (CIBA §10.2), so it cannot be a hash; the key derives from the KEK."""

    def __init__(self, kek: bytes) -> None:
        self._aead = AESGCM(hmac.new(kek, b"tessera ciba notify v1", hashlib.sha256).digest())

    def seal(self, token: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, token.encode(), b"ciba-notify")

    def open(self, blob: bytes) -> str:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], b"ciba-notify").decode()
        except (InvalidTag, ValueError) as exc:
            raise Unavailable(detail="sealed notification token failed authentication") from exc


def build_approval_edges(
    service: ApprovalService,
    store: Any,
    clock: Any,
    *,
    config: Any,
    kek: bytes,
    keyring: Any,
    tokens: Any,
    dev_issuers: Any = None,
    background: bool = True,
) -> ApprovalEdges:
    seal = NotificationSeal(kek)
    ciba = CibaEndpoints(
        service, tokens, keyring, clock, issuer=config.issuer, seal=(seal.seal, seal.open)
    )
    passkeys = Passkeys(store, clock, service, issuer=config.issuer, key=console_key(kek))
    delivery = ApprovalDelivery(
        store,
        ciba,
        seal.open,
        allow_private=config.outbound_allow_private,
        console_url=f"{config.issuer}/console/approvals",
        groups=lambda: service.policy()[0].groups,
        executor=ThreadPoolExecutor(2, thread_name_prefix="approvals") if background else None,
        clock=clock,
    )
    service.after_commit.append(delivery)
    service.sweep_hooks.append(delivery.retry_undelivered)
    return ApprovalEdges(ciba, passkeys, delivery, dev_issuers)
