"""``tessera approvals list|show|approve|deny|enroll-link|client`` and ``tessera dev
approval-call`` (issue 8). ``approve``/``deny`` here are administrator decisions: recorded
with method ``admin`` and actor ``admin:cli``, and an approval is refused where the rule
requires a passkey (a denial only tightens and is always accepted)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from tessera.approvals.service import describe
from tessera.cli.demo import dev_app
from tessera.cli.main import ACTOR, JsonOpt, _config, _json_arg, _tessera, app
from tessera.cli.output import cli_errors, console, emit, emit_json, fail, kv, table

approvals_app = typer.Typer(no_args_is_help=True, help="Human approvals (CIBA requests).")
app.add_typer(approvals_app, name="approvals")
ADMIN = f"admin:{ACTOR}"


@approvals_app.command("list")
def list_requests(
    status: Annotated[
        str | None, typer.Option(help="pending|approved|denied|expired|cancelled")
    ] = "pending",
    all_: Annotated[bool, typer.Option("--all", help="Every status.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Approval requests, newest first (pending by default)."""
    with cli_errors():
        t = _tessera()
        now = t.clock.now()
        items = [describe(r, now) for r in t.approvals.list(status=None if all_ else status)]
    emit(
        items,
        as_json,
        lambda: table(
            "approval requests",
            ["auth_req_id", "status", "action", "resource", "needs", "votes", "expires in"],
            [
                (
                    i["auth_req_id"],
                    i["status"],
                    i["action"],
                    f"{i['resource']['type']}:{i['resource']['id']}",
                    i["required"],
                    len(i["votes"]),
                    i["expires_in"],
                )
                for i in items
            ],
        ),
    )


@approvals_app.command("show")
def show(auth_req_id: str, as_json: JsonOpt = False) -> None:
    """One request with its full context (arguments are redacted)."""
    with cli_errors():
        t = _tessera()
        item = describe(t.approvals.get(auth_req_id), t.clock.now())
    emit(item, as_json, lambda: kv(list(item.items())))


def _decide(auth_req_id: str, decision: str, note: str, as_json: bool) -> None:
    with cli_errors():
        t = _tessera()
        req = t.approvals.decide(auth_req_id, ADMIN, decision, note, method="admin")  # type: ignore[arg-type]
        item = describe(req, t.clock.now())
    emit(item, as_json, lambda: console.print(f"{auth_req_id}: {item['status']}", markup=False))


@approvals_app.command("approve")
def approve(
    auth_req_id: str,
    note: Annotated[str, typer.Option(help="Why (kept in the audit ledger).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Approve as an administrator (refused where the rule requires a passkey)."""
    _decide(auth_req_id, "approve", note, as_json)


@approvals_app.command("deny")
def deny(
    auth_req_id: str,
    note: Annotated[str, typer.Option(help="Why (kept in the audit ledger).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Deny as an administrator (always accepted: it only tightens)."""
    _decide(auth_req_id, "deny", note, as_json)


@approvals_app.command("enroll-link")
def enroll_link(user: str, as_json: JsonOpt = False) -> None:
    """A one-time link (24 h) for USER to register a first passkey on the approver page."""
    with cli_errors():
        t = _tessera()
        url, expires = t.approval_edges.passkeys.enroll_link(user, actor=ACTOR)
    emit(
        {"url": url, "expires_at": expires.isoformat()},
        as_json,
        lambda: console.print(f"{url}\n(valid until {expires.isoformat()}, once)", markup=False),
    )


@approvals_app.command("client")
def client(
    agent: str,
    mode: Annotated[str, typer.Option(help="poll | ping | push")] = "poll",
    endpoint: Annotated[str | None, typer.Option(help="notification endpoint URL")] = None,
) -> None:
    """Register an agent's CIBA token delivery mode (CIBA §4 client metadata)."""
    with cli_errors():
        t = _tessera()
        agent_id = t.identity.get_agent(agent).id
        t.approval_edges.ciba.set_client(agent_id, mode, endpoint)
    console.print(f"{agent}: {mode}" + (f" → {endpoint}" if endpoint else ""), markup=False)


@dev_app.command("approval-call")
def dev_approval_call(
    agent: Annotated[str, typer.Argument(help="A demo agent (its key is in <data>/demo/).")],
    action: Annotated[str, typer.Argument(help="server/tool")],
    resource: Annotated[str, typer.Argument(help="type:id")],
    arguments: Annotated[str, typer.Option("--arguments", help="JSON object")] = "{}",
    user: Annotated[str | None, typer.Option(help="Act on behalf of this user.")] = None,
    tools: Annotated[str, typer.Option(help="Session tools.")] = "docs/*",
    scopes: Annotated[str, typer.Option(help="Session data scopes.")] = "doc:*",
    wait: Annotated[int, typer.Option(help="Seconds to poll for the answer (0: do not).")] = 120,
) -> None:
    """Do what an agent does when a call needs a human (DEVELOPMENT MODE ONLY: demo keys):
    get a session, send a CIBA backchannel request for the call, poll the token endpoint
    with the CIBA grant, print the one-shot token response or the CIBA error."""
    from tessera.cli.demo import DEMO_MODEL_DIGEST
    from tessera.cli.sessions import _need
    from tessera.sdk import SessionClient, load_private_jwk
    from tessera.sdk.approvals import request_approval, wait_for_approval
    from tessera.tokens.dev import mint_dev_user_token

    config = _config()
    if not config.dev_mode:
        fail("`tessera dev approval-call` needs TESSERA_DEV_MODE=1")
    rtype, sep, rid = resource.partition(":")
    if not sep:
        fail("resource must be type:id")
    args = _json_arg(arguments, "--arguments")
    if not isinstance(args, dict):
        fail("--arguments must be a JSON object")
    key_dir = config.data_dir / "demo"
    with cli_errors():
        t = _tessera()
        a = t.identity.get_agent(agent)
        op = t.identity.get_operator(a.operator_id)
        agent_key = load_private_jwk(_need(key_dir / f"{a.name}.jwk"))
        dpop_key = load_private_jwk(_need(key_dir / f"{a.name}.dpop.jwk"))
        op_key = load_private_jwk(_need(key_dir / f"{op.name}-operator.jwk"))
        subject = None
        if user is not None and t.dev_issuer_key is not None:
            subject = mint_dev_user_token(
                t.dev_issuer_key, config.issuer, t.identity.get_user(user).id, now=time.time()
            )
    c = SessionClient(config.issuer, a.id, agent_key, dpop_key)
    details: dict[str, Any] = {
        "type": "tessera_session",
        "tools": [x for x in tools.split(",") if x],
        "data_scope": [x for x in scopes.split(",") if x],
    }
    try:
        s = c.session(
            details=details,
            resource="https://tools.example/mcp",
            attestation=c.attest(
                op_key, op.id, next(iter(sorted(a.ceiling.models)), DEMO_MODEL_DIGEST)
            ),
            subject_token=subject,
        )
        if s.status_code != 200:
            emit_json(s.json())
            raise typer.Exit(1)
        ack = request_approval(
            c,
            s.json()["access_token"],
            action=action,
            resource={"type": rtype, "id": rid},
            arguments=args,
        )
        if ack.status_code != 200:
            emit_json(ack.json())
            raise typer.Exit(1)
        body = ack.json()
        console.print(
            f"auth_req_id {body['auth_req_id']} (expires in {body['expires_in']} s); "
            f"approve it on {config.issuer}/console/approvals or with "
            f"`tessera approvals approve {body['auth_req_id']}`",
            markup=False,
        )
        if wait <= 0:
            return
        result = wait_for_approval(
            c, body["auth_req_id"], interval=float(body.get("interval", 2)), deadline=wait
        )
    except (OSError, ValueError) as exc:
        fail(f"cannot reach {config.issuer}: {type(exc).__name__}")
    emit_json(result.json())
    if result.status_code != 200:
        raise typer.Exit(1)


__all__ = ["json"]
