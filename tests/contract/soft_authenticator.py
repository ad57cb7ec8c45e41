"""A software WebAuthn authenticator for tests without a browser (WebAuthn L3 §6.1, §8.7
"none" attestation, ES256): makes registration and assertion responses as JSON."""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url


class SoftAuthenticator:
    def __init__(self, origin: str, rp_id: str) -> None:
        self.origin = origin
        self.rp_id = rp_id
        self.keys: dict[bytes, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}
        self.counter = 0

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": False}
        ).encode()

    def create(self, options: dict[str, Any]) -> dict[str, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        nums = key.public_key().public_numbers()
        cred_id = secrets.token_bytes(32)
        user = base64url_to_bytes(options["user"]["id"])
        self.keys[cred_id] = (key, user)
        cose = cbor2.dumps(
            {1: 2, 3: -7, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")}
        )
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([0x45])  # UP | UV | AT
            + struct.pack(">I", 0)
            + bytes(16)
            + struct.pack(">H", len(cred_id))
            + cred_id
            + cose
        )
        att = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": bytes_to_base64url(cred_id),
            "rawId": bytes_to_base64url(cred_id),
            "type": "public-key",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": bytes_to_base64url(
                    self._client_data("webauthn.create", options["challenge"])
                ),
                "attestationObject": bytes_to_base64url(att),
                "transports": ["internal"],
            },
        }

    def get(self, options: dict[str, Any], *, cred_id: bytes | None = None) -> dict[str, Any]:
        if cred_id is None:
            allowed = [base64url_to_bytes(c["id"]) for c in options.get("allowCredentials", [])]
            cred_id = next(c for c in (allowed or list(self.keys)) if c in self.keys)
        key, user = self.keys[cred_id]
        self.counter += 1
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([0x05])  # UP | UV
            + struct.pack(">I", self.counter)
        )
        cdj = self._client_data("webauthn.get", options["challenge"])
        sig = key.sign(auth_data + hashlib.sha256(cdj).digest(), ec.ECDSA(hashes.SHA256()))
        return {
            "id": bytes_to_base64url(cred_id),
            "rawId": bytes_to_base64url(cred_id),
            "type": "public-key",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": bytes_to_base64url(cdj),
                "authenticatorData": bytes_to_base64url(auth_data),
                "signature": bytes_to_base64url(sig),
                "userHandle": bytes_to_base64url(user),
            },
        }
