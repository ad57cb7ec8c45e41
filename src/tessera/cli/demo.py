"""``tessera demo load`` and ``tessera dev up``: a small, realistic demo in a minute."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tessera.app import Tessera, initialise, write_private_file
from tessera.cli.main import _config, _tessera, app
from tessera.cli.output import cli_errors, console, emit_json, fail
from tessera.crypto.keys import generate_signing_key
from tessera.errors import Conflict, NotFound
from tessera.rebac.ports import RelationTuple

demo_app = typer.Typer(no_args_is_help=True, help="The demo data set.")
dev_app = typer.Typer(no_args_is_help=True, help="Development helpers (not for production).")
app.add_typer(demo_app, name="demo")
app.add_typer(dev_app, name="dev")

DEMO_OPERATOR = "acme"
DEMO_MODEL_DIGEST = "sha256:" + hashlib.sha256(b"tessera demo model acme-llm 2026.11").hexdigest()
# The same model as examples/rebac/docs.fga (a test keeps them equal).
DEMO_REBAC_MODEL = """model
  schema 1.1
type user
type agent
type team
  relations
    define member: [user, agent]
type folder
  relations
    define owner: [user]
    define viewer: [user, agent, team#member] or owner
type document
  relations
    define parent: [folder]
    define owner: [user]
    define editor: [user, agent, team#member] or owner
    define viewer: [user, agent, team#member] or editor or viewer from parent
"""


LAST_DEMO_AGENT = "legacy-reporter"  # created by the last step of load_demo


def _write_key(path: Path, jwk: dict[str, Any]) -> None:
    write_private_file(path, json.dumps(jwk, indent=2))


def load_demo(t: Tessera) -> dict[str, Any]:
    """Create the demo set once: 1 operator, 2 users, 1 model, 2 agents, 1 service.

    Agents' and the service's private keys go to ``<data dir>/demo/`` (mode 0600) so the
    walkthrough can use them; only public keys are registered."""
    ident = t.identity
    key_dir = t.config.data_dir / "demo"
    try:
        ident.get_operator(DEMO_OPERATOR)
    except NotFound:
        pass
    else:
        # The steps below are separate transactions; the agent created last says they all
        # ran. Without it an earlier load stopped part-way, and reusing that half would
        # leave the walkthrough failing in confusing places: refuse, saying what to do.
        names = {a.name for a in ident.list_agents(operator=DEMO_OPERATOR)}
        if LAST_DEMO_AGENT in names:
            return {"loaded": False, "reason": "demo already loaded"}
        raise Conflict(
            "the demo in this store is incomplete: an earlier `tessera demo load` stopped "
            "part-way; start again from an empty store (with the embedded SQLite store, "
            f"remove {t.config.data_dir})",
            code="demo_incomplete",
        )
    actor = "demo"
    ident.create_operator(DEMO_OPERATOR, "Acme Research", actor=actor)
    ident.create_user(
        "alice",
        display_name="Alice (analyst)",
        email="alice@acme.example",
        grants={
            # the docs tools, and the MCP demo tools her mcp-client agent uses (examples/gateway)
            "tools": [
                "docs/search",
                "docs/read",
                "web/fetch",
                "tools/read_file",
                "tools/send_email",
                "tools/fetch_url",
            ],
            "data_scopes": ["doc:*", "mcp_server:tools", "file:*"],
            "budgets": {"tool_calls": 100, "external_calls": 10},
        },
        actor=actor,
    )
    ident.create_user(
        "bob",
        display_name="Bob (finance lead)",
        email="bob@acme.example",
        grants={
            "tools": ["docs/*", "mail/send_email", "finance/*"],
            "data_scopes": ["doc:*", "ledger:*"],
            "budgets": {"tool_calls": 500, "external_calls": 50},
        },
        actor=actor,
    )
    op_key = generate_signing_key("ES256")
    ident.add_operator_key(DEMO_OPERATOR, op_key.public_jwk(), actor=actor)
    _write_key(key_dir / f"{DEMO_OPERATOR}-operator.jwk", {**op_key.private_jwk, "kid": op_key.kid})
    ident.register_model(DEMO_OPERATOR, "acme-llm", "2026.11", DEMO_MODEL_DIGEST, actor=actor)
    created = []
    for name, owner, purpose, ceiling in [
        (
            "research-assistant",
            "alice",
            "Answers research questions from internal docs",
            {
                "tools": ["docs/*", "web/fetch"],
                "data_scopes": ["doc:*"],
                "models": [DEMO_MODEL_DIGEST],
                "may_delegate_to": ["summarizer"],
                "budgets": {"tool_calls": 50, "external_calls": 5},
                "max_session_lifetime": 900,
                "max_delegation_depth": 2,
            },
        ),
        (
            "summarizer",
            "bob",
            "Summarises documents handed to it by other agents",
            {
                "tools": ["docs/read"],
                "data_scopes": ["doc:*"],
                "models": [DEMO_MODEL_DIGEST],
                "budgets": {"tool_calls": 20},
                "max_session_lifetime": 600,
                "max_delegation_depth": 0,
            },
        ),
    ]:
        key = generate_signing_key("ES256")
        reg = ident.register_agent(
            name,
            operator=DEMO_OPERATOR,
            owner=owner,
            purpose=purpose,
            expires_in_days=90,
            ceiling=ceiling,
            jwk=key.public_jwk(),
            actor=actor,
        ).value
        _write_key(
            key_dir / f"{name}.jwk", {**key.private_jwk, "kid": key.kid, "client_id": reg.agent.id}
        )
        dpop = generate_signing_key("ES256")  # the agent's DPoP key, separate from its id key
        _write_key(key_dir / f"{name}.dpop.jwk", {**dpop.private_jwk, "kid": dpop.kid})
        created.append(reg.agent.id)
    created.append(_demo_mcp_client(t, key_dir))  # the MCP gateway walkthrough's agent
    gw_key = generate_signing_key("ES256")
    ident.register_service(
        "mcp-gateway",
        description="Demo MCP gateway (a PEP)",
        scopes=["pdp.evaluate", "introspect"],
        jwk=gw_key.public_jwk(),
        actor=actor,
    )
    _write_key(key_dir / "mcp-gateway.jwk", {**gw_key.private_jwk, "kid": gw_key.kid})
    _load_demo_relationships(t, research_assistant=created[0], summarizer=created[1])
    _load_demo_directory(t)
    _seed_demo_baselines(t, created)
    stream = _load_demo_signals(t, key_dir)
    posture_examples = _load_posture_examples(t, key_dir)  # last: it marks a complete load
    return {
        "loaded": True,
        "ssf_stream": stream,
        "operator": DEMO_OPERATOR,
        "users": ["alice", "bob"],
        "agents": created,
        "model": DEMO_MODEL_DIGEST,
        "key_dir": str(key_dir),
        "posture_examples": posture_examples,
    }


def _seed_demo_baselines(t: Tessera, agents: list[str]) -> None:
    """A few days of synthetic history, so `tessera behavior show research-assistant` works."""
    from tessera.behavior.demo import RESEARCH, SUMMARIZER, DemoAgent, seed_baselines

    if t.behaviour is None:
        return
    op = t.identity.get_operator(DEMO_OPERATOR).id
    seed_baselines(
        t.behaviour,
        [
            DemoAgent(agents[0], op, DEMO_MODEL_DIGEST, RESEARCH),
            DemoAgent(agents[1], op, DEMO_MODEL_DIGEST, SUMMARIZER),
        ],
        end=t.clock.timestamp(),
    )


def _demo_mcp_client(t: Tessera, key_dir: Path) -> str:
    """An agent a stock MCP client can be (``dpop_required: false``, so no DPoP key file),
    allowed the demo tools of ``examples/gateway`` (server ``tools``), minus delete_records."""
    key = generate_signing_key("ES256")
    reg = t.identity.register_agent(
        "mcp-client",
        operator=DEMO_OPERATOR,
        owner="alice",
        purpose="Uses MCP tools through the Tessera gateway (examples/gateway)",
        expires_in_days=90,
        ceiling={
            "tools": ["tools/read_file", "tools/send_email", "tools/fetch_url"],
            "data_scopes": ["mcp_server:tools", "file:*"],
            "models": [DEMO_MODEL_DIGEST],
            "budgets": {"tool_calls": 100, "external_calls": 10},
            "max_session_lifetime": 900,
            "dpop_required": False,
        },
        jwk=key.public_jwk(),
        actor="demo",
    ).value
    _write_key(
        key_dir / "mcp-client.jwk", {**key.private_jwk, "kid": key.kid, "client_id": reg.agent.id}
    )
    return reg.agent.id


def _load_posture_examples(t: Tessera, key_dir: Path) -> list[str]:
    """An agent that `tessera posture scan` flags: a legacy client secret (a standing
    credential) and no model attestation. Its secret goes to the demo key dir (0600)."""
    reg = t.identity.register_agent(
        LAST_DEMO_AGENT,
        operator=DEMO_OPERATOR,
        owner="bob",
        purpose="Weekly report bot still on a shared secret (a posture example)",
        expires_in_days=90,
        ceiling={
            "tools": ["docs/read"],
            "data_scopes": ["doc:*"],
            "models": [DEMO_MODEL_DIGEST],
            "budgets": {"tool_calls": 10},
        },
        attestation_required=False,
        legacy_secret=True,
        actor="demo",
    ).value
    if reg.secret is not None:
        write_private_file(key_dir / "legacy-reporter.secret", reg.secret.secret + "\n")
    return [reg.agent.id]


def _load_demo_relationships(t: Tessera, *, research_assistant: str, summarizer: str) -> None:
    """alice and the research assistant are in team research, which sees the research-notes
    folder (document roadmap); bob owns q3-budget and shared it with the summarizer."""
    t.rebac.apply_model(DEMO_REBAC_MODEL, actor="demo")
    rows = [
        ("team:research", "member", "user:alice"),
        ("team:research", "member", f"agent:{research_assistant}"),
        ("folder:research-notes", "viewer", "team:research#member"),
        ("folder:research-notes", "owner", "user:alice"),
        ("document:roadmap", "parent", "folder:research-notes"),
        ("document:q3-budget", "owner", "user:bob"),
        ("document:q3-budget", "viewer", f"agent:{summarizer}"),
    ]
    t.rebac.write_tuples([RelationTuple(*row) for row in rows], actor="demo")


DEMO_DIRECTORY = {
    # the PDP's directory (issue 5): Cedar reads resource.classification
    # (examples/policy-bundle: secret documents are for people, not agents)
    "document": {
        "roadmap": {"classification": "internal"},
        "q3-budget": {"classification": "confidential"},
        "board-minutes": {"classification": "secret"},
    },
}


def _load_demo_directory(t: Tessera) -> None:
    if t.directory is not None:
        t.directory.load(DEMO_DIRECTORY, actor="demo")


def _load_demo_signals(t: Tessera, key_dir: Path) -> str:
    """A SIEM that polls Tessera's SSF stream (session-revoked, account-disabled); its API key
    (a service credential with scope ssf.manage) goes to ``<key dir>/siem.api-key``."""
    from tessera.signals.caep import ACCOUNT_DISABLED, SESSION_REVOKED
    from tessera.signals.model import POLL

    reg = t.identity.register_service(
        "siem",
        description="Demo SSF receiver (polls CAEP/RISC events)",
        scopes=["ssf.manage"],
        api_key=True,
        actor="demo",
    ).value
    assert reg.api_key is not None  # noqa: S101 - requested above
    write_private_file(key_dir / "siem.api-key", reg.api_key.secret + "\n")
    body = {"delivery": {"method": POLL}, "events_requested": [SESSION_REVOKED, ACCOUNT_DISABLED]}
    return str(t.signals.transmitter.create(reg.service.id, body)["stream_id"])


@demo_app.command("load")
def demo_load(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Load the demo data set (idempotent)."""
    with cli_errors():
        result = load_demo(_tessera())
    if as_json:
        emit_json(result)
    elif result["loaded"]:
        console.print(
            f"demo loaded: operator acme, users alice and bob, model acme-llm, "
            f"agents research-assistant, summarizer and mcp-client (and legacy-reporter, "
            f"which `tessera posture scan` flags), relationship model with 7 tuples, "
            f"3 documents in the PDP directory, "
            f"SSF stream {result['ssf_stream']} for service siem; "
            f"keys in {result['key_dir']}",
            markup=False,
        )
    else:
        console.print("demo already loaded", markup=False)


@dev_app.command("up")
def dev_up(port: Annotated[int | None, typer.Option()] = None) -> None:
    """What `make run` does: initialise on first use (development mode), load the demo once,
    and serve."""
    config = _config()
    if not config.dev_mode:
        fail("`tessera dev up` needs TESSERA_DEV_MODE=1 (it writes the admin token to disk)")
    with cli_errors():
        result = initialise(config)
    if result.admin_token:
        console.print(
            f"admin token (dev copy in {result.admin_token_file}): {result.admin_token}",
            markup=False,
        )
    with cli_errors():
        demo = load_demo(_tessera())
    console.print("demo loaded" if demo["loaded"] else "reusing existing data", markup=False)
    if demo["loaded"]:  # issue 8: alice's first passkey for the approver page
        with cli_errors():
            link, _ = _tessera().approval_edges.passkeys.enroll_link("alice", actor="demo")
        console.print(f"approver passkey enrollment for alice (once, 24 h): {link}", markup=False)
    token_file = config.data_dir / "admin-token"
    console.print(
        f'try: curl -s -H "Authorization: Bearer $(cat {token_file})" '
        f"http://{config.host}:{port or config.port}/admin/v1/agents",
        markup=False,
    )
    from tessera.cli.main import serve

    serve(host=None, port=port)
