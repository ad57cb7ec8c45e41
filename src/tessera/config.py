"""Configuration from ``TESSERA_*`` environment variables; nothing else reads the environment.

Invalid configuration raises ``ConfigError`` with a one-line message naming the variable, and
the CLI turns that into an exit before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit

from tessera.crypto.keys import SUPPORTED_SIGNING_ALGS, parse_kek
from tessera.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Config:
    data_dir: Path
    database_url: str
    issuer: str
    host: str
    port: int
    kek: bytes | None
    kek_file: Path
    dev_mode: bool
    signing_alg: str
    agent_max_lifetime_days: int
    max_request_bytes: int
    require_services: bool
    trusted_issuers_file: Path | None = None
    dpop_nonces: bool = False
    spiffe_bundles_file: Path | None = None
    rate_limit: int = 500
    audit_checkpoint_every: int = 1000
    audit_checkpoint_interval: int = 60
    audit_checkpoint_dir: Path | None = None
    # checkpoint webhook (issue 6, docs/audit.md "Checkpoint sinks"); the secret never in repr
    audit_checkpoint_webhook: str | None = None
    audit_checkpoint_webhook_secret: str | None = field(default=None, repr=False)
    audit_checkpoint_webhook_auth: str = "bearer"
    audit_checkpoint_webhook_timeout: float = 5.0
    outbound_allow_private: bool = False
    # Behaviour engine (issue 10, docs/behavior.md): a second opinion that only tightens.
    behaviour_enabled: bool = True
    behaviour_deadline_ms: float = 2.0
    behaviour_warmup_calls: int = 200
    behaviour_window: int = 400
    behaviour_drift_threshold: float = 0.1
    behaviour_revoke_on_high: bool = True
    gateway_config_file: Path | None = None  # MCP gateway (issue 9): mounts /mcp/<server>
    # signals (#7): event-log tailing, staleness bound, Shared Signals
    staleness_bound: float = 1.0
    event_poll_interval: float = 0.2
    event_notify: bool = True
    event_tailing: bool = True
    ssf_transmitters_file: Path | None = None
    ssf_push_hosts: frozenset[str] = frozenset()
    # posture and access review (issue 11); posture_interval 0 disables scheduled scans
    posture_interval: int = 3600
    posture_dormant_days: int = 30
    posture_window_days: int = 30
    posture_key_rotation_days: int = 90
    posture_max_delegation_depth: int = 5
    review_on_expiry: str = "revoke"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def load_kek(self) -> bytes:
        """The key-encryption key: ``TESSERA_KEK`` if set, else the key file."""
        if self.kek is not None:
            return self.kek
        try:
            text = self.kek_file.read_text()
        except OSError as exc:
            raise ConfigError(
                f"TESSERA_KEK_FILE: cannot read {self.kek_file} (run `tessera init`)"
            ) from exc
        try:
            return parse_kek(text)
        except ConfigError as exc:
            raise ConfigError(f"TESSERA_KEK_FILE: {exc.message}") from exc


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read and validate every ``TESSERA_*`` variable."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("TESSERA_DATA_DIR") or "./.tessera").expanduser().resolve()
    host = env.get("TESSERA_HOST") or "127.0.0.1"
    port = _int(env, "TESSERA_PORT", 8080, 1, 65535)

    database_url = env.get("TESSERA_DATABASE_URL") or f"sqlite:///{data_dir / 'tessera.db'}"
    scheme = database_url.split(":", 1)[0]
    if scheme not in {"sqlite", "postgresql", "postgresql+psycopg"}:
        raise ConfigError("TESSERA_DATABASE_URL: use sqlite:///PATH or postgresql://USER@HOST/DB")
    if scheme == "postgresql":
        database_url = "postgresql+psycopg" + database_url[len("postgresql") :]

    issuer = env.get("TESSERA_ISSUER") or f"http://{host}:{port}"
    parts = urlsplit(issuer)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError("TESSERA_ISSUER: must be an http(s) URL without query or fragment")
    if parts.scheme == "http" and parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise ConfigError("TESSERA_ISSUER: plain http is allowed only on loopback")
    issuer = issuer.rstrip("/")

    kek: bytes | None = None
    raw_kek = env.get("TESSERA_KEK")
    if raw_kek:
        try:
            kek = parse_kek(raw_kek)
        except ConfigError as exc:
            raise ConfigError(f"TESSERA_KEK: {exc.message}") from exc
    kek_file = Path(env.get("TESSERA_KEK_FILE") or data_dir / "kek").expanduser().resolve()

    alg = env.get("TESSERA_SIGNING_ALG") or "ES256"
    if alg not in SUPPORTED_SIGNING_ALGS:
        raise ConfigError(f"TESSERA_SIGNING_ALG: one of {', '.join(SUPPORTED_SIGNING_ALGS)}")

    return Config(
        data_dir=data_dir,
        database_url=database_url,
        issuer=issuer,
        host=host,
        port=port,
        kek=kek,
        kek_file=kek_file,
        dev_mode=_bool(env, "TESSERA_DEV_MODE", False),
        signing_alg=alg,
        agent_max_lifetime_days=_int(env, "TESSERA_AGENT_MAX_LIFETIME_DAYS", 365, 1, 3650),
        max_request_bytes=_int(env, "TESSERA_MAX_REQUEST_BYTES", 65536, 1024, 16 * 2**20),
        require_services=_bool(env, "TESSERA_REQUIRE_SERVICES", False),
        trusted_issuers_file=_path(env, "TESSERA_TRUSTED_ISSUERS"),
        dpop_nonces=_bool(env, "TESSERA_DPOP_NONCES", False),
        spiffe_bundles_file=_path(env, "TESSERA_SPIFFE_BUNDLES"),
        rate_limit=_int(env, "TESSERA_RATE_LIMIT", 500, 0, 1_000_000),
        audit_checkpoint_every=_int(env, "TESSERA_AUDIT_CHECKPOINT_EVERY", 1000, 1, 10_000_000),
        audit_checkpoint_interval=_int(env, "TESSERA_AUDIT_CHECKPOINT_INTERVAL", 60, 1, 86_400),
        audit_checkpoint_dir=_dir(env, "TESSERA_AUDIT_CHECKPOINT_DIR"),
        **_checkpoint_webhook(env),
        outbound_allow_private=_bool(env, "TESSERA_OUTBOUND_ALLOW_PRIVATE", False),
        behaviour_enabled=_bool(env, "TESSERA_BEHAVIOUR", True),
        behaviour_deadline_ms=_float(env, "TESSERA_BEHAVIOUR_DEADLINE_MS", 2.0, 0.05, 1000.0),
        behaviour_warmup_calls=_int(env, "TESSERA_BEHAVIOUR_WARMUP_CALLS", 200, 10, 1_000_000),
        behaviour_window=_int(env, "TESSERA_BEHAVIOUR_WINDOW", 400, 50, 100_000),
        behaviour_drift_threshold=_float(env, "TESSERA_BEHAVIOUR_DRIFT_THRESHOLD", 0.1, 0.001, 10),
        behaviour_revoke_on_high=_bool(env, "TESSERA_BEHAVIOUR_REVOKE_ON_HIGH", True),
        gateway_config_file=_path(env, "TESSERA_GATEWAY_CONFIG"),
        **_signals(env),
        posture_interval=_int(env, "TESSERA_POSTURE_INTERVAL", 3600, 0, 7 * 86_400),
        posture_dormant_days=_int(env, "TESSERA_POSTURE_DORMANT_DAYS", 30, 1, 3650),
        posture_window_days=_int(env, "TESSERA_POSTURE_WINDOW_DAYS", 30, 1, 3650),
        posture_key_rotation_days=_int(env, "TESSERA_POSTURE_KEY_ROTATION_DAYS", 90, 1, 3650),
        posture_max_delegation_depth=_int(env, "TESSERA_POSTURE_MAX_DELEGATION_DEPTH", 5, 0, 25),
        review_on_expiry=_choice(env, "TESSERA_REVIEW_ON_EXPIRY", "revoke", ("revoke", "keep")),
    )


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from exc
    if not low <= value <= high:  # also refuses nan
        raise ConfigError(f"{name}: must be between {low} and {high}, got {value}")
    return value


class _SignalSettings(TypedDict):
    staleness_bound: float
    event_poll_interval: float
    event_notify: bool
    event_tailing: bool
    ssf_transmitters_file: Path | None
    ssf_push_hosts: frozenset[str]


def _signals(env: Mapping[str, str]) -> _SignalSettings:
    """Event-log tailing and Shared Signals settings (signals/tailer.py, signals/receiver.py)."""
    bound = _float(env, "TESSERA_STALENESS_BOUND", 1.0, 0.05, 3600.0)
    poll = _float(env, "TESSERA_EVENT_POLL_INTERVAL", min(0.2, bound / 5), 0.01, 3600.0)
    if poll >= bound:
        raise ConfigError("TESSERA_EVENT_POLL_INTERVAL: must be under TESSERA_STALENESS_BOUND")
    return {
        "staleness_bound": bound,
        "event_poll_interval": poll,
        "event_notify": _bool(env, "TESSERA_EVENT_NOTIFY", True),
        "event_tailing": _bool(env, "TESSERA_EVENT_TAILING", True),
        "ssf_transmitters_file": _path(env, "TESSERA_SSF_TRANSMITTERS"),
        "ssf_push_hosts": frozenset(
            h.strip().lower()
            for h in (env.get("TESSERA_SSF_PUSH_HOSTS") or "").split(",")
            if h.strip()
        ),
    }


class _WebhookSettings(TypedDict):
    audit_checkpoint_webhook: str | None
    audit_checkpoint_webhook_secret: str | None
    audit_checkpoint_webhook_auth: str
    audit_checkpoint_webhook_timeout: float


def _checkpoint_webhook(env: Mapping[str, str]) -> _WebhookSettings:
    """The optional checkpoint webhook (audit/webhook.py). Its secret comes from
    ``..._SECRET`` or ``..._SECRET_FILE``; error messages never include it."""
    url = (env.get("TESSERA_AUDIT_CHECKPOINT_WEBHOOK") or "").strip() or None
    secret = env.get("TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET") or None
    secret_file = _path(env, "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET_FILE")
    if secret is not None and secret_file is not None:
        raise ConfigError(
            "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET: set it or ..._SECRET_FILE, not both"
        )
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(
                f"TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET_FILE: cannot read {secret_file}"
            ) from exc
    auth = _choice(env, "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_AUTH", "bearer", ("bearer", "hmac"))
    timeout = _float(env, "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT", 5.0, 0.1, 120.0)
    if url is None:
        if secret is not None:
            raise ConfigError("TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET: no webhook URL is set")
        return {
            "audit_checkpoint_webhook": None,
            "audit_checkpoint_webhook_secret": None,
            "audit_checkpoint_webhook_auth": auth,
            "audit_checkpoint_webhook_timeout": timeout,
        }
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.fragment:
        raise ConfigError("TESSERA_AUDIT_CHECKPOINT_WEBHOOK: must be an http(s) URL")
    if parts.scheme == "http" and not _bool(env, "TESSERA_OUTBOUND_ALLOW_PRIVATE", False):
        raise ConfigError(
            "TESSERA_AUDIT_CHECKPOINT_WEBHOOK: plain http only with TESSERA_OUTBOUND_ALLOW_PRIVATE"
        )
    if secret is not None and (len(secret) < 16 or not secret.isprintable() or " " in secret):
        raise ConfigError(
            "TESSERA_AUDIT_CHECKPOINT_WEBHOOK_SECRET: at least 16 printable characters, no spaces"
        )
    if auth == "hmac" and secret is None:
        raise ConfigError("TESSERA_AUDIT_CHECKPOINT_WEBHOOK_AUTH: hmac needs a secret")
    return {
        "audit_checkpoint_webhook": url,
        "audit_checkpoint_webhook_secret": secret,
        "audit_checkpoint_webhook_auth": auth,
        "audit_checkpoint_webhook_timeout": timeout,
    }


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = (env.get(name) or default).strip().lower()
    if raw not in allowed:
        raise ConfigError(f"{name}: one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{name}: no such file {path}")
    return path


def _dir(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}: {path} is not a directory")
    return path
