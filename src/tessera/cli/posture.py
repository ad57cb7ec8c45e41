"""``tessera posture scan|findings`` and ``tessera review start|list|show|answer|close``.

``posture scan`` is a dry run by default: it shows the findings and what ``--apply`` would
change. ``--apply`` shows the plan, asks (unless ``--yes``), then performs each remediation
through the normal service calls, so every change writes its event and audit record.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from tessera.app import Tessera
from tessera.cli.main import ACTOR, JsonOpt, _tessera, app
from tessera.cli.output import cli_errors, console, emit_json, err_console, fail, kv, table
from tessera.clock import iso, parse_iso
from tessera.posture.finding import Finding, Severity
from tessera.posture.ports import FindingQuery
from tessera.posture.remediation import Action, Outcome
from tessera.posture.report import render_html
from tessera.posture.review import ReviewService
from tessera.posture.service import PostureService

posture_app = typer.Typer(no_args_is_help=True, help="Identity posture: scan and remediate.")
review_app = typer.Typer(no_args_is_help=True, help="Access reviews of agents' grants.")
app.add_typer(posture_app, name="posture")
app.add_typer(review_app, name="review")

FORMATS = ("table", "json", "html")


def _ready() -> tuple[Tessera, PostureService, ReviewService]:
    with cli_errors():
        t = _tessera()
        t.audit.chain_pending()  # the ledger pass sees what was just committed
    if t.posture is None or t.reviews is None:
        fail("posture is not configured")
    return t, t.posture, t.reviews


def _findings_table(findings: list[Finding], actions: list[Action]) -> None:
    """Severity, rule and fix never wrap (they are what people scan for and grep)."""
    planned = {a.finding_key for a in actions}
    grid = Table(show_lines=False, header_style="bold")
    grid.add_column("severity", no_wrap=True)
    grid.add_column("rule", no_wrap=True)
    grid.add_column("subject", overflow="fold")
    grid.add_column("finding", overflow="fold")
    grid.add_column("fix", no_wrap=True)
    for f in findings:
        fix = f.remediation.value + (" *" if f.key in planned else "")
        grid.add_row(f.severity.value, f.rule, f.subject, f.summary, fix)
    console.print(grid)
    if planned:
        console.print("* performed by --apply", markup=False)


def _outcomes_table(outcomes: list[Outcome]) -> None:
    table(
        "remediations",
        ["action", "target", "status", "message"],
        [(o.action.kind.value, o.action.target, o.status, o.message) for o in outcomes],
    )


@posture_app.command("scan")
def scan(
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table (default), json or html.")
    ] = "table",
    apply: Annotated[
        bool, typer.Option("--apply", help="Perform the remediations (default: dry run).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to a file.")
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option(help="Exit 1 when a finding of this severity or worse remains (CI)."),
    ] = None,
) -> None:
    """Scan identities and the audit ledger for posture findings (DESIGN 1)."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}")
    if fail_on is not None and fail_on not in _SEVERITIES:
        fail(f"--fail-on must be one of {', '.join(_SEVERITIES)}")
    _t, posture, _reviews = _ready()
    show_progress = err_console.is_terminal
    with (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            console=err_console,
            transient=True,
            disable=not show_progress,
        ) as bar,
        cli_errors(),
    ):
        task = bar.add_task("scanning", total=len(posture.scanner.rules) + 2)

        def progress(step: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"scanning: {step}")

        recorded = posture.scan(actor=ACTOR, progress=progress)
    result = recorded.result
    actions = posture.plan(result.findings)
    outcomes: list[Outcome] = []
    if apply and actions:
        if fmt == "table":
            _findings_table(result.findings, actions)
        if not yes and not typer.confirm(
            f"apply {len(actions)} remediation(s)?", default=False, err=True
        ):
            fail("nothing applied", code=1)
        with cli_errors():
            outcomes = posture.apply(actions, actor=ACTOR)
    if fmt == "json":
        text: str | None = None
        emit_json(
            {
                "scan_id": recorded.scan_id,
                "started": iso(result.started),
                "finished": iso(result.finished),
                "stats": result.stats(),
                "counts": recorded.counts,
                "findings": [f.to_dict() for f in result.findings],
                "actions": [a.to_dict() for a in actions],
                "applied": [o.to_dict() for o in outcomes],
                "dry_run": not apply,
            }
        )
    elif fmt == "html":
        text = render_html(result, result.findings, actions)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
            console.print(f"report written to {output}", markup=False)
    else:
        if not (apply and actions):
            _findings_table(result.findings, actions)
        if outcomes:
            _outcomes_table(outcomes)
        by = {s: sum(1 for f in result.findings if f.severity.value == s) for s in _SEVERITIES}
        console.print(
            f"{len(result.findings)} finding(s): "
            + ", ".join(f"{n} {s}" for s, n in by.items() if n)
            + (" " if result.findings else "")
            + f"({result.identities} identities, {result.records} audit records read,"
            f" {(result.finished - result.started).total_seconds():.2f} s)",
            markup=False,
        )
        for rule, error in sorted(result.errors.items()):
            err_console.print(f"rule {rule} failed: {error}", markup=False)
        if actions and not apply:
            console.print(
                f"dry run: {len(actions)} remediation(s) would be applied with --apply",
                markup=False,
            )
    if fail_on is not None:
        worst = Severity(fail_on).rank
        fixed = {o.action.finding_key for o in outcomes if o.status != "failed"}
        if any(f.severity.rank >= worst and f.key not in fixed for f in result.findings):
            raise typer.Exit(1)


_SEVERITIES = ("critical", "high", "medium", "low")


@posture_app.command("findings")
def findings(
    status: Annotated[str, typer.Option(help="open or resolved.")] = "open",
    severity: Annotated[str | None, typer.Option(help="This severity or worse.")] = None,
    rule: Annotated[str | None, typer.Option()] = None,
    agent: Annotated[str | None, typer.Option(help="Agent id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Findings recorded by earlier scans, with first-seen and last-seen times."""
    _t, posture, _r = _ready()
    with cli_errors():
        rows = posture.findings(
            FindingQuery(status=status, severity=severity, rule=rule, agent=agent, limit=limit)
        )
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    table(
        None,
        ["severity", "rule", "subject", "finding", "first seen", "last seen"],
        [
            (
                r.finding.severity.value,
                r.finding.rule,
                r.finding.subject,
                r.finding.summary,
                iso(r.first_seen),
                iso(r.last_seen),
            )
            for r in rows
        ],
    )


# -- access reviews ----------------------------------------------------------------------


@review_app.command("start")
def review_start(
    deadline: Annotated[
        str | None, typer.Option(help="ISO 8601 time, or a number of days such as 14d.")
    ] = None,
    on_expiry: Annotated[
        str | None, typer.Option(help="revoke or keep unanswered items at the deadline.")
    ] = None,
    name: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Open a campaign: each owner confirms or revokes each grant of their agents."""
    t, _p, reviews = _ready()
    when = None
    if deadline is not None:
        try:
            if deadline.endswith("d") and deadline[:-1].isdigit():
                when = t.clock.now() + timedelta(days=int(deadline[:-1]))
            else:
                when = parse_iso(deadline)
        except (ValueError, OverflowError):
            fail("--deadline must be an ISO 8601 time or a number of days such as 14d")
    with cli_errors():
        campaign, count = reviews.start(name=name, deadline=when, on_expiry=on_expiry, actor=ACTOR)
    out = {**campaign.to_dict(), "items": {"pending": count}}
    if as_json:
        emit_json(out)
        return
    kv(
        [
            ("campaign", campaign.id),
            ("name", campaign.name),
            ("deadline", iso(campaign.deadline)),
            ("on expiry", campaign.on_expiry),
            ("items", count),
        ]
    )


@review_app.command("list")
def review_list(
    status: Annotated[str | None, typer.Option(help="open or closed.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Review campaigns, newest first."""
    _t, _p, reviews = _ready()
    with cli_errors():
        rows = reviews.campaigns(status)
    if as_json:
        emit_json([c.to_dict() for c in rows])
        return
    table(
        None,
        ["id", "name", "status", "deadline", "on expiry", "items"],
        [
            (
                c.id,
                c.name,
                c.status,
                iso(c.deadline),
                c.on_expiry,
                ", ".join(f"{k} {v}" for k, v in sorted((c.counts or {}).items())),
            )
            for c in rows
        ],
    )


@review_app.command("show")
def review_show(
    campaign: str,
    owner: Annotated[str | None, typer.Option(help="Only this owner's items.")] = None,
    state: Annotated[str | None, typer.Option(help="pending, confirmed, revoked, ...")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A campaign and its items (what each owner is asked to confirm)."""
    t, _p, reviews = _ready()
    with cli_errors():
        c = reviews.get(campaign)
        items = reviews.items(campaign, owner=owner, state=state)
        names = _agent_names(t)
        owners = {u.id: u.username for u in t.identity.list_users()}
    if as_json:
        emit_json({**c.to_dict(), "item_list": [i.to_dict() for i in items]})
        return
    items.sort(key=lambda i: (names.get(i.agent_id, i.agent_id), i.field, i.item))
    kv([("campaign", c.id), ("name", c.name), ("status", c.status), ("deadline", iso(c.deadline))])
    table(
        None,
        ["item id", "agent", "owner", "grant", "state"],
        [
            (
                i.id,
                names.get(i.agent_id, i.agent_id),
                owners.get(i.owner_user_id, i.owner_user_id),
                f"{i.field}: {i.item}",
                i.state,
            )
            for i in items
        ],
    )


def _agent_names(t: Tessera) -> dict[str, str]:
    return {a.id: a.name for a in t.identity.list_agents()}


@review_app.command("answer")
def review_answer(
    campaign: str,
    item: str,
    confirm: Annotated[bool, typer.Option("--confirm", help="Keep the grant.")] = False,
    revoke: Annotated[bool, typer.Option("--revoke", help="Remove it from the ceiling.")] = False,
    note: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer one item on the owner's behalf: --confirm or --revoke."""
    if confirm == revoke:
        fail("give exactly one of --confirm or --revoke")
    t, _p, reviews = _ready()
    with cli_errors():
        answered = reviews.answer(
            campaign, item, "confirm" if confirm else "revoke", note=note, actor=ACTOR
        )
    if as_json:
        emit_json(answered.to_dict())
    else:
        name = _agent_names(t).get(answered.agent_id, answered.agent_id)
        console.print(f"{answered.field} {answered.item} of {name}: {answered.state}", markup=False)


@review_app.command("close")
def review_close(
    campaign: Annotated[str | None, typer.Argument(help="Omit to close every expired one.")] = None,
    force: Annotated[bool, typer.Option(help="Close before the deadline.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Settle unanswered items (revoke or keep, per campaign) and close."""
    _t, _p, reviews = _ready()
    with cli_errors():
        if campaign is None:
            closed = [reviews.get(c) for c in reviews.close_expired(actor=ACTOR)]
        else:
            closed = [reviews.close(campaign, actor=ACTOR, force=force)]
    out: list[dict[str, Any]] = [c.to_dict() for c in closed]
    if as_json:
        emit_json(out)
        return
    if not closed:
        console.print("no campaign past its deadline", markup=False)
    for c in closed:
        console.print(
            f"{c.id} closed: " + ", ".join(f"{k} {v}" for k, v in sorted((c.counts or {}).items())),
            markup=False,
        )
