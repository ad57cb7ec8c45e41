"""``tessera session`` (list, show, revoke) and token helpers under ``tessera dev``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tessera.cli.demo import DEMO_MODEL_DIGEST, dev_app
from tessera.cli.main import ACTOR, JsonOpt, _config, _json_arg, _tessera, app, operator_app
from tessera.cli.output import cli_errors, console, emit, emit_json, fail, kv, table
from tessera.tokens.dev import mint_dev_user_token

session_app = typer.Typer(no_args_is_help=True, help="Agent sessions (tokens in the store).")
app.add_typer(session_app, name="session")


@session_app.command("list")
def session_list(
    agent: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List sessions, newest first."""
    if status not in (None, "active", "revoked"):
        fail("--status: active or revoked")
    with cli_errors():
        recs = _tessera().sessions.list_sessions(agent=agent, status=status, limit=limit)
    emit(
        [r.to_dict() for r in recs],
        as_json,
        lambda: table(
            "sessions",
            ["sid", "agent", "user", "depth", "status", "expires"],
            [
                (
                    r.sid,
                    r.agent_id,
                    r.user_id or "-",
                    r.depth,
                    r.status,
                    r.expires_at.isoformat(timespec="seconds") if r.expires_at else "",
                )
                for r in recs
            ],
        ),
    )


@session_app.command("show")
def session_show(sid: str, as_json: JsonOpt = False) -> None:
    """Show a session: claims, remaining budgets and whether it is live right now."""
    with cli_errors():
        rec, budgets, live, reason = _tessera().sessions.get_session(sid)
    out = {**rec.to_dict(), "budgets_remaining": budgets, "live": live, "live_reason": reason}
    emit(out, as_json, lambda: kv([(k, v) for k, v in out.items()]))


@session_app.command("revoke")
def session_revoke(
    sid: str, reason: Annotated[str, typer.Option()] = "revoked by admin", as_json: JsonOpt = False
) -> None:
    """Revoke a session and its whole delegation subtree."""
    with cli_errors():
        revoked = _tessera().sessions.revoke_session(sid, reason, actor=ACTOR)
    emit(
        {"revoked": revoked},
        as_json,
        lambda: console.print(
            f"revoked {len(revoked)} session(s): {' '.join(revoked)}", markup=False
        ),
    )


@operator_app.command("add-key")
def operator_add_key(
    ref: str,
    jwk: Annotated[str, typer.Option(help="Public JWK or file.")],
    as_json: JsonOpt = False,
) -> None:
    """Register an operator public key (it signs model attestations)."""
    key = _json_arg(jwk, "--jwk")
    with cli_errors():
        w = _tessera().identity.add_operator_key(ref, key, actor=ACTOR)
    emit(
        {**w.value.to_dict(), "consistency_token": w.consistency_token},
        as_json,
        lambda: kv([("credential", w.value.id), ("jkt", w.value.jkt)]),
    )


@dev_app.command("user-token")
def dev_user_token(
    user: str, lifetime: Annotated[int, typer.Option(min=60, max=86400)] = 3600
) -> None:
    """Mint a user token from the development issuer (DEVELOPMENT MODE ONLY)."""
    config = _config()
    if not config.dev_mode:
        fail(
            "`tessera dev user-token` needs TESSERA_DEV_MODE=1; production user tokens come "
            "from trusted issuers"
        )
    with cli_errors():
        t = _tessera()
        if t.dev_issuer_key is None:
            fail("no development issuer key; run `tessera init` in development mode")
        uid = t.identity.get_user(user).id
        token = mint_dev_user_token(
            t.dev_issuer_key, config.issuer, uid, now=time.time(), lifetime=lifetime
        )
    print(token)


@dev_app.command("session")
def dev_session(
    agent: Annotated[str, typer.Argument(help="A demo agent (its key is in <data>/demo/).")],
    user: Annotated[str | None, typer.Option(help="Act on behalf of this user.")] = None,
    tools: Annotated[str, typer.Option(help="Comma-separated tools to request.")] = "docs/*",
    scopes: Annotated[str, typer.Option(help="Comma-separated data scopes.")] = "doc:*",
    resource: Annotated[str, typer.Option()] = "https://tools.example/mcp",
    issuer: Annotated[str | None, typer.Option(help="Server URL (default: issuer).")] = None,
) -> None:
    """Get a session token from the running server the way an agent does: client assertion,
    model attestation by the operator, DPoP proof (DEVELOPMENT MODE ONLY: uses demo keys)."""
    from tessera.sdk import SessionClient, load_private_jwk

    config = _config()
    if not config.dev_mode:
        fail("`tessera dev session` needs TESSERA_DEV_MODE=1")
    key_dir = config.data_dir / "demo"
    with cli_errors():
        t = _tessera()
        a = t.identity.get_agent(agent)
        op = t.identity.get_operator(a.operator_id)
        agent_key = load_private_jwk(_need(key_dir / f"{a.name}.jwk"))
        dpop_path = key_dir / f"{a.name}.dpop.jwk"
        # Agents registered with dpop_required: false (stock MCP clients) may go without.
        dpop_key = (
            load_private_jwk(_need(dpop_path))
            if a.ceiling.dpop_required or dpop_path.exists()
            else None
        )
        op_key = load_private_jwk(_need(key_dir / f"{op.name}-operator.jwk"))
        subject = None
        if user is not None:
            if t.dev_issuer_key is None:
                fail("no development issuer key")
            subject = mint_dev_user_token(
                t.dev_issuer_key, config.issuer, t.identity.get_user(user).id, now=time.time()
            )
    base = (issuer or config.issuer).rstrip("/")
    client = SessionClient(base, a.id, agent_key, dpop_key)
    digest = next(iter(sorted(a.ceiling.models)), DEMO_MODEL_DIGEST)
    details: dict[str, Any] = {
        "type": "tessera_session",
        "tools": [x for x in tools.split(",") if x],
        "data_scope": [x for x in scopes.split(",") if x],
    }
    try:
        resp = client.session(
            details=details,
            resource=resource,
            attestation=client.attest(op_key, op.id, digest),
            subject_token=subject,
        )
    except Exception as exc:  # connection refused etc.: one line, exit 2
        fail(f"cannot reach {base}: {type(exc).__name__}")
    emit_json(resp.json())
    if resp.status_code != 200:
        raise typer.Exit(1)


def _need(path: Path) -> Path:
    if not path.exists():
        fail(f"missing {path}; run `tessera demo load` in development mode")
    return path


__all__ = ["json"]
