"""Entry point: ``tessera`` and its command groups."""

from __future__ import annotations

import gc
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from tessera.app import Tessera, build, initialise
from tessera.cli.output import cli_errors, console, emit, emit_json, fail, kv, table
from tessera.clock import parse_iso
from tessera.config import Config, load_config
from tessera.errors import ConfigError, InvalidInput

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Tessera: identity and access management for AI agents.",
)
operator_app = typer.Typer(no_args_is_help=True, help="Operators: who deploys agents.")
user_app = typer.Typer(no_args_is_help=True, help="Users: humans agents act for.")
service_app = typer.Typer(no_args_is_help=True, help="Services: PEPs, receivers, callers.")
agent_app = typer.Typer(no_args_is_help=True, help="Agents and their lifecycle.")
model_app = typer.Typer(no_args_is_help=True, help="Model artifacts, by digest.")
keys_app = typer.Typer(no_args_is_help=True, help="Tessera's signing keys.")
events_app = typer.Typer(no_args_is_help=True, help="The durable event log.")
for name, sub in [
    ("operator", operator_app),
    ("user", user_app),
    ("service", service_app),
    ("agent", agent_app),
    ("model", model_app),
    ("keys", keys_app),
    ("events", events_app),
]:
    app.add_typer(sub, name=name)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
ACTOR = "cli"
MAX_JSON_ARG = 1 << 20


def _config() -> Config:
    try:
        return load_config()
    except ConfigError as exc:
        fail(exc.message)


def _tessera() -> Tessera:
    with cli_errors():
        return build(_config())


def _json_arg(value: str | None, what: str) -> Any:
    """A JSON value given inline (starting with ``{`` or ``[``) or as a file path."""
    if value is None:
        return None
    text = value
    if not value.lstrip().startswith(("{", "[")):
        path = Path(value)
        try:
            if path.stat().st_size > MAX_JSON_ARG:
                fail(f"{what}: file is larger than 1 MiB")
            text = path.read_text()
        except OSError as exc:
            fail(f"{what}: cannot read {value}: {exc.strerror}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what}: invalid JSON ({exc.msg} at line {exc.lineno})")


def _print_written(
    value: dict[str, Any], token: str | None, as_json: bool, pairs: list[tuple[str, Any]]
) -> None:
    if as_json:
        emit_json({**value, "consistency_token": token})
    else:
        kv(pairs + ([("consistency", token)] if token else []))


# -- init / serve ------------------------------------------------------------------------


@app.command()
def init(
    as_json: JsonOpt = False,
    new_admin_token: Annotated[
        bool, typer.Option(help="Create another admin token even if one exists.")
    ] = False,
) -> None:
    """Create the data dir, key-encryption key, schema, signing key and admin token."""
    config = _config()
    with cli_errors():
        result = initialise(config, new_admin_token=new_admin_token)
    out = {
        "data_dir": str(config.data_dir),
        "database": _safe_url(config.database_url),
        "signing_kid": result.kid,
        "created_kek_file": result.created_kek,
        "admin_token": result.admin_token,
        "admin_token_file": str(result.admin_token_file) if result.admin_token_file else None,
    }
    if as_json:
        emit_json(out)
        return
    console.print(f"initialised {out['database']} (signing key {result.kid})", markup=False)
    if result.admin_token:
        console.print("admin token (shown once, stored only as a hash):", markup=False)
        console.print(f"  {result.admin_token}", markup=False)
        if result.admin_token_file:
            console.print(
                f"development mode: copy written to {result.admin_token_file}", markup=False
            )
    else:
        console.print(
            "already initialised; admin token unchanged (use --new-admin-token for another)",
            markup=False,
        )


def _safe_url(url: str) -> str:
    """A database URL without its password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the HTTP API (admin API, JWKS, health)."""
    import uvicorn

    from tessera.http.asgi import create_app

    config = _config()
    tessera = _tessera()
    with cli_errors():  # e.g. TESSERA_GATEWAY_CONFIG naming an unregistered service
        asgi = create_app(tessera)
    console.print(f"serving on http://{host or config.host}:{port or config.port}", markup=False)
    # decisions.md 92: what start-up built (modules, the app, caches) lives as long as the
    # process; frozen, the collector never walks it again (full collections of it paused
    # every request for over 100 ms under load).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        asgi,
        host=host or config.host,
        port=port or config.port,
        log_level="info",
        http="httptools",
        access_log=False,
    )


# -- operators ---------------------------------------------------------------------------


@operator_app.command("create")
def operator_create(
    name: str, display_name: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False
) -> None:
    """Register an operator (the organisation or team that deploys agents)."""
    with cli_errors():
        w = _tessera().identity.create_operator(name, display_name, actor=ACTOR)
    o = w.value
    _print_written(
        o.to_dict(),
        w.consistency_token,
        as_json,
        [("operator", o.name), ("id", o.id), ("status", o.status.value)],
    )


@operator_app.command("list")
def operator_list(as_json: JsonOpt = False) -> None:
    """List operators."""
    with cli_errors():
        ops = _tessera().identity.list_operators()
    emit(
        [o.to_dict() for o in ops],
        as_json,
        lambda: table(
            "operators",
            ["id", "name", "display name", "status"],
            [(o.id, o.name, o.display_name, o.status.value) for o in ops],
        ),
    )


def _operator_status(ref: str, suspend: bool, reason: str | None, as_json: bool) -> None:
    with cli_errors():
        ident = _tessera().identity
        w = (
            ident.suspend_operator(ref, reason, actor=ACTOR)
            if suspend
            else (ident.resume_operator(ref, actor=ACTOR))
        )
    _print_written(
        w.value.to_dict(),
        w.consistency_token,
        as_json,
        [("operator", w.value.name), ("status", w.value.status.value)],
    )


@operator_app.command("suspend")
def operator_suspend(
    ref: str, reason: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False
) -> None:
    """Suspend an operator: every one of its agents is refused (kill switch)."""
    _operator_status(ref, True, reason, as_json)


@operator_app.command("resume")
def operator_resume(ref: str, as_json: JsonOpt = False) -> None:
    """Resume a suspended operator."""
    _operator_status(ref, False, None, as_json)


# -- users -------------------------------------------------------------------------------


@user_app.command("create")
def user_create(
    username: str,
    display_name: Annotated[str | None, typer.Option()] = None,
    email: Annotated[str | None, typer.Option()] = None,
    grants: Annotated[
        str | None, typer.Option(help="Grants as JSON or a JSON file (same shape as a ceiling).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a user (a human agents act for) with their grants."""
    g = _json_arg(grants, "--grants")
    with cli_errors():
        w = _tessera().identity.create_user(
            username, display_name=display_name, email=email, grants=g, actor=ACTOR
        )
    u = w.value
    _print_written(
        u.to_dict(),
        w.consistency_token,
        as_json,
        [("user", u.username), ("id", u.id), ("grants", u.grants.to_dict())],
    )


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users."""
    with cli_errors():
        users = _tessera().identity.list_users()
    emit(
        [u.to_dict() for u in users],
        as_json,
        lambda: table(
            "users",
            ["id", "username", "display name", "status", "tools"],
            [
                (
                    u.id,
                    u.username,
                    u.display_name,
                    u.status.value,
                    ", ".join(sorted(u.grants.tools)),
                )
                for u in users
            ],
        ),
    )


@user_app.command("disable")
def user_disable(ref: str, as_json: JsonOpt = False) -> None:
    """Disable a user: their rights become empty."""
    with cli_errors():
        w = _tessera().identity.disable_user(ref, actor=ACTOR)
    _print_written(
        w.value.to_dict(),
        w.consistency_token,
        as_json,
        [("user", w.value.username), ("status", w.value.status.value)],
    )


# -- services ----------------------------------------------------------------------------


@service_app.command("register")
def service_register(
    name: str,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="pdp.evaluate, introspect, ssf.manage, ...")
    ] = None,
    description: Annotated[str, typer.Option()] = "",
    jwk: Annotated[str | None, typer.Option(help="Public JWK as JSON or a file.")] = None,
    api_key: Annotated[
        bool, typer.Option("--api-key", help="Also issue an API key (shown once).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register a service identity (a PEP, SSF receiver or introspection caller)."""
    key = _json_arg(jwk, "--jwk")
    with cli_errors():
        w = _tessera().identity.register_service(
            name, description=description, scopes=scope or [], jwk=key, api_key=api_key, actor=ACTOR
        )
    reg = w.value
    out = {
        "service": reg.service.to_dict(),
        "credentials": [c.to_dict() for c in reg.credentials],
        "api_key": reg.api_key.secret if reg.api_key else None,
    }
    pairs: list[tuple[str, Any]] = [
        ("service", reg.service.name),
        ("id", reg.service.id),
        ("scopes", " ".join(sorted(reg.service.scopes))),
    ]
    if reg.api_key:
        pairs.append(("api key", f"{reg.api_key.secret}  (shown once)"))
    _print_written(out, w.consistency_token, as_json, pairs)


@service_app.command("list")
def service_list(as_json: JsonOpt = False) -> None:
    """List services."""
    with cli_errors():
        svcs = _tessera().identity.list_services()
    emit(
        [x.to_dict() for x in svcs],
        as_json,
        lambda: table(
            "services",
            ["id", "name", "scopes", "status"],
            [(x.id, x.name, " ".join(sorted(x.scopes)), x.status.value) for x in svcs],
        ),
    )


# -- agents ------------------------------------------------------------------------------


@agent_app.command("register")
def agent_register(
    name: str,
    operator: Annotated[str, typer.Option(help="Operator id or name.")],
    owner: Annotated[str, typer.Option(help="Owner user id or username.")],
    purpose: Annotated[str, typer.Option(help="What the agent is for.")],
    expires_in_days: Annotated[int | None, typer.Option(help="Lifetime in days.")] = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 expiry.")] = None,
    ceiling: Annotated[str | None, typer.Option(help="Ceiling JSON or file.")] = None,
    jwk: Annotated[str | None, typer.Option(help="Public JWK JSON or file.")] = None,
    spiffe_id: Annotated[str | None, typer.Option(help="SPIFFE ID credential.")] = None,
    legacy_secret: Annotated[
        bool, typer.Option("--legacy-secret", help="Issue a client secret (flagged by posture).")
    ] = False,
    no_attestation: Annotated[
        bool, typer.Option("--no-attestation", help="Accept self-asserted model digests (flagged).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register an agent with its owner, purpose, expiry, ceiling and credential."""
    cap = _json_arg(ceiling, "--ceiling")
    key = _json_arg(jwk, "--jwk")
    expiry: datetime | None = None
    if expires_at is not None:
        try:
            expiry = parse_iso(expires_at)
        except ValueError:
            fail("--expires-at: not an ISO 8601 timestamp")
    if expiry is None and expires_in_days is None:
        expires_in_days = 90
    with cli_errors():
        w = _tessera().identity.register_agent(
            name,
            operator=operator,
            owner=owner,
            purpose=purpose,
            expires_at=expiry,
            expires_in_days=expires_in_days,
            ceiling=cap,
            attestation_required=not no_attestation,
            jwk=key,
            spiffe_id=spiffe_id,
            legacy_secret=legacy_secret,
            actor=ACTOR,
        )
    reg = w.value
    out = {
        "agent": reg.agent.to_dict(),
        "credentials": [c.to_dict() for c in reg.credentials],
        "client_secret": reg.secret.secret if reg.secret else None,
    }
    pairs: list[tuple[str, Any]] = [
        ("agent", reg.agent.name),
        ("client_id", reg.agent.id),
        ("expires", reg.agent.expires_at.isoformat()),
    ]
    if reg.secret:
        pairs.append(("client secret", f"{reg.secret.secret}  (shown once)"))
    _print_written(out, w.consistency_token, as_json, pairs)


@agent_app.command("list")
def agent_list(
    operator: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """List agents."""
    with cli_errors():
        t = _tessera()
        agents = t.identity.list_agents(operator=operator, status=status)
        statuses = t.identity.effective_agent_statuses(agents)
        rows = [(a, st.value) for a, st in zip(agents, statuses, strict=True)]
    emit(
        [{**a.to_dict(), "effective_status": st} for a, st in rows],
        as_json,
        lambda: table(
            "agents",
            ["client_id", "name", "owner", "status", "expires", "purpose"],
            [
                (a.id, a.name, a.owner_user_id, st, a.expires_at.date().isoformat(), a.purpose)
                for a, st in rows
            ],
        ),
    )


@agent_app.command("show")
def agent_show(ref: str, as_json: JsonOpt = False) -> None:
    """Show an agent, its ceiling and credentials."""
    with cli_errors():
        t = _tessera()
        a = t.identity.get_agent(ref)
        creds = t.identity.list_credentials("agent", a.id)
        effective = t.identity.effective_agent_status(a).value
    out = {
        **a.to_dict(),
        "effective_status": effective,
        "credentials": [c.to_dict() for c in creds],
    }

    def human() -> None:
        kv(
            [
                ("agent", a.name),
                ("client_id", a.id),
                ("operator", a.operator_id),
                ("owner", a.owner_user_id),
                ("purpose", a.purpose),
                ("status", f"{a.status.value} (effective: {effective})"),
                ("expires", a.expires_at.isoformat()),
                ("ceiling", a.ceiling.to_dict()),
            ]
        )
        table(
            "credentials",
            ["id", "kind", "status", "jkt / spiffe id"],
            [(c.id, c.kind.value, c.status.value, c.jkt or c.spiffe_id or "") for c in creds],
        )

    emit(out, as_json, human)


def _agent_transition(ref: str, target: str, reason: str | None, as_json: bool) -> None:
    with cli_errors():
        ident = _tessera().identity
        if target == "suspend":
            w = ident.suspend_agent(ref, reason, actor=ACTOR)
        elif target == "resume":
            w = ident.resume_agent(ref, actor=ACTOR)
        else:
            w = ident.decommission_agent(ref, reason, actor=ACTOR)
    _print_written(
        w.value.to_dict(),
        w.consistency_token,
        as_json,
        [("agent", w.value.name), ("status", w.value.status.value)],
    )


@agent_app.command("suspend")
def agent_suspend(
    ref: str, reason: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False
) -> None:
    """Suspend an agent (reversible)."""
    _agent_transition(ref, "suspend", reason, as_json)


@agent_app.command("resume")
def agent_resume(ref: str, as_json: JsonOpt = False) -> None:
    """Resume a suspended agent."""
    _agent_transition(ref, "resume", None, as_json)


@agent_app.command("decommission")
def agent_decommission(
    ref: str, reason: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False
) -> None:
    """Decommission an agent for good: its credentials are disabled at once."""
    _agent_transition(ref, "decommission", reason, as_json)


# -- models ------------------------------------------------------------------------------


@model_app.command("register")
def model_register(
    name: str,
    operator: Annotated[str, typer.Option()],
    version: Annotated[str, typer.Option()],
    digest: Annotated[str, typer.Option(help="sha256:<hex>")],
    signature: Annotated[
        str | None, typer.Option(help="Operator's signature over the digest (compact JWS).")
    ] = None,
    spiffe_id: Annotated[
        list[str] | None,
        typer.Option("--spiffe-id", help="A workload whose JWT-SVID attests this model."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a model artifact by digest."""
    with cli_errors():
        w = _tessera().identity.register_model(
            operator,
            name,
            version,
            digest,
            signature=signature,
            spiffe_ids=spiffe_id or [],
            actor=ACTOR,
        )
    m = w.value
    _print_written(
        m.to_dict(),
        w.consistency_token,
        as_json,
        [("model", f"{m.name} {m.version}"), ("id", m.id), ("digest", m.digest)],
    )


@model_app.command("list")
def model_list(
    operator: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False
) -> None:
    """List model artifacts."""
    with cli_errors():
        models = _tessera().identity.list_models(operator)
    emit(
        [m.to_dict() for m in models],
        as_json,
        lambda: table(
            "models",
            ["id", "name", "version", "digest", "status"],
            [(m.id, m.name, m.version, m.digest, m.status.value) for m in models],
        ),
    )


@model_app.command("revoke")
def model_revoke(
    ref: str, reason: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False
) -> None:
    """Revoke a model digest: sessions running it lose access."""
    with cli_errors():
        w = _tessera().identity.revoke_model(ref, reason, actor=ACTOR)
    _print_written(
        w.value.to_dict(),
        w.consistency_token,
        as_json,
        [("model", w.value.digest), ("status", w.value.status.value)],
    )


# -- keys / events -----------------------------------------------------------------------


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """List signing keys and whether each is still published in the JWKS."""
    with cli_errors():
        t = _tessera()
        now = t.clock.now()
        keys = [k.to_dict(now) for k in t.keyring.list()]
    emit(
        keys,
        as_json,
        lambda: table(
            "signing keys",
            ["kid", "alg", "status", "created", "published until"],
            [
                (
                    k["kid"],
                    k["alg"],
                    k["status"],
                    k["created_at"],
                    "(active)" if k["status"] == "active" else k["publish_until"],
                )
                for k in keys
            ],
        ),
    )


@keys_app.command("rotate")
def keys_rotate(
    alg: Annotated[str, typer.Option(help="ES256 or EdDSA")] = "ES256", as_json: JsonOpt = False
) -> None:
    """Create a new active signing key; old keys stay published until their tokens expire."""
    if alg not in ("ES256", "EdDSA"):
        fail("--alg: use ES256 or EdDSA")
    with cli_errors():
        t = _tessera()
        rec = t.keyring.rotate(alg, actor=ACTOR)  # type: ignore[arg-type]
        out = rec.to_dict(t.clock.now())
    emit(out, as_json, lambda: kv([("new active key", rec.kid), ("alg", rec.alg)]))


@events_app.command("list")
def events_list(
    after: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Read the durable event log after a sequence number."""
    with cli_errors():
        events = _tessera().store.read_events_after(after, limit)
    emit(
        [e.to_dict() for e in events],
        as_json,
        lambda: table(
            "events",
            ["seq", "time", "type", "subject", "actor"],
            [
                (e.seq, e.created_at.isoformat(timespec="seconds"), e.type, e.subject, e.actor)
                for e in events
            ],
        ),
    )


def _register_extra_commands() -> None:
    from tessera.cli import (
        approvals,  # noqa: F401 - registers `approvals` and `dev approval-call`
        audit,  # noqa: F401 - registers the `audit` group
        behavior,  # noqa: F401 - registers the `behavior` group
        demo,  # noqa: F401 - registers `demo` and `dev` groups
        directory,  # noqa: F401 - registers `directory` (the PDP's attributes)
        gateway,  # noqa: F401 - registers `gateway` (the MCP gateway)
        policy,  # noqa: F401 - registers `policy` and `pdp` groups
        posture,  # noqa: F401 - registers `posture` and `review` groups
        rebac,  # noqa: F401 - registers the `rebac` group
        sessions,  # noqa: F401 - registers `session`, dev token helpers
        signals,  # noqa: F401 - registers the `signals` group (streams, tail)
    )


def main() -> None:
    _register_extra_commands()
    try:
        app()
    except InvalidInput as exc:  # pragma: no cover - cli_errors handles the usual paths
        fail(exc.message)
