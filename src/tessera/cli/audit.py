"""``tessera audit verify|tail|search|export|checkpoint``: the ledger from the command line.

Every command first chains committed outbox entries (the CLI runs in-process against the
database, like a server node), so what it shows is current.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tessera.app import Tessera
from tessera.audit.export import export_line
from tessera.audit.ports import MAX_PAGE, AuditQuery
from tessera.audit.service import default_verify_jobs
from tessera.audit.webhook import webhook_of
from tessera.cli.main import JsonOpt, _tessera, app
from tessera.cli.output import cli_errors, console, emit, emit_json, err_console, fail, kv, table
from tessera.clock import parse_iso

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit ledger.")
app.add_typer(audit_app, name="audit")

PROBLEM_EXIT = 1


def _ready() -> Tessera:
    with cli_errors():
        t = _tessera()
        t.audit.chain_pending()
    return t


def _rows(records: list[dict[str, Any]]) -> None:
    table(
        None,
        ["seq", "time", "event", "actor", "action", "resource", "outcome"],
        [
            (
                r["seq"],
                r["time"],
                r["event_type"],
                r["actor"]["principal"],
                r["action"],
                r["resource"],
                r["outcome"] + (f" ({', '.join(r['reasons'])})" if r["reasons"] else ""),
            )
            for r in records
        ],
    )


@audit_app.command("verify")
def verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            help="Directory of checkpoint files (default: $TESSERA_DATA_DIR/checkpoints)."
        ),
    ] = None,
    jwks: Annotated[
        Path | None,
        typer.Option(help="Pin the public keys (a JWK Set file) instead of the database's."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify a JSONL export instead of the database."),
    ] = None,
    archive: Annotated[
        list[Path] | None,
        typer.Option(
            "--archive",
            help="Directory of archived segments (`tessera audit archive`); verifies them "
            "and their links to the live ledger too. Repeatable.",
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            min=0,
            help="Processes that check the live chain in parallel ranges (0: one per CPU, "
            "at most 8; 1: one pass). Used from 50,000 records per process.",
        ),
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Check the hash chain and every signed checkpoint; exit 1 on any problem."""
    t = _ready()
    with cli_errors():
        pinned = json.loads(jwks.read_text()) if jwks is not None else None
        dirs = [checkpoints] if checkpoints is not None else None
        if file is None:
            report = t.audit.verify(
                checkpoint_dirs=dirs,
                jwks=pinned,
                archive_dirs=archive,
                jobs=jobs or default_verify_jobs(),
            )
        else:
            with file.open(encoding="utf-8") as lines:
                report = t.audit.verify(checkpoint_dirs=dirs, jwks=pinned, export_lines=lines)
    out = report.to_dict()
    if as_json:
        emit_json(out)
    else:
        kv(
            [
                ("records", report.records),
                ("head hash", report.head_hash),
                (
                    "checkpoints",
                    f"{report.checkpoints_checked} (largest {report.largest_checkpoint})",
                ),
                ("pending", report.pending),
                ("segments", report.segments),
                ("processes", report.processes),
                ("first record", report.first_seq),
                ("archived records checked", report.archived_records),
                ("first bad record", report.first_bad_seq),
                ("seconds", f"{report.seconds:.3f}"),
                ("result", "OK" if report.ok else f"{len(report.problems)} problem(s)"),
            ]
        )
        for p in report.problems:
            err_console.print(f"problem: {p.message}", markup=False)
    if not report.ok:
        raise typer.Exit(PROBLEM_EXIT)


def _query(**filters: Any) -> AuditQuery:
    for name in ("since", "until"):
        if filters.get(name) is not None:
            try:
                filters[name] = parse_iso(filters[name])
            except ValueError:
                fail(f"--{name}: expected an ISO 8601 time")
    with cli_errors():
        return AuditQuery(**filters)


@audit_app.command("search")
def search(
    agent: Annotated[str | None, typer.Option()] = None,
    session: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str | None, typer.Option()] = None,
    event_type: Annotated[str | None, typer.Option("--event-type")] = None,
    outcome: Annotated[str | None, typer.Option(help="e.g. success, allow, deny")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601, exclusive")] = None,
    after: Annotated[int, typer.Option(min=0, help="continue after this seq")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=MAX_PAGE)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Records matching every given filter, oldest first."""
    q = _query(
        agent=agent,
        session=session,
        user=user,
        event_type=event_type,
        outcome=outcome,
        since=since,
        until=until,
        after=after,
        limit=limit,
    )
    t = _ready()
    with cli_errors():
        records = t.audit.query(q)
    emit(records, as_json, lambda: _rows(records))


@audit_app.command("tail")
def tail(
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, max=MAX_PAGE)] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.05, max=60)] = 0.5,
    as_json: JsonOpt = False,
) -> None:
    """The newest records; with ``--follow``, new ones as they are chained (Ctrl-C stops).

    With ``--json`` each record is one JSON line."""
    t = _ready()
    with cli_errors():
        records = list(reversed(t.audit.query(AuditQuery(limit=lines, newest_first=True))))
    last = records[-1]["seq"] if records else 0
    _print_batch(records, as_json)
    while follow:
        try:
            time.sleep(interval)
            with cli_errors():
                t.audit.chain_pending()
                records = t.audit.query(AuditQuery(after=last, limit=MAX_PAGE))
        except KeyboardInterrupt:
            return
        if records:
            last = records[-1]["seq"]
            _print_batch(records, as_json)


def _print_batch(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for r in records:
            sys.stdout.write(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    elif records:
        _rows(records)


@audit_app.command("export")
def export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl (one record per line)")] = "jsonl",
    after: Annotated[int, typer.Option(min=0, help="only records after this seq")] = 0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file (default: stdout)")
    ] = None,
) -> None:
    """Every record with its hash, in order: the input of archiving and external checks."""
    if fmt != "jsonl":
        fail("--format: only jsonl is supported")
    t = _ready()
    count = 0
    with cli_errors():
        sink = output.open("w", encoding="utf-8") if output is not None else sys.stdout
        try:
            cursor = after
            while True:
                page = t.audit.query(AuditQuery(after=cursor, limit=MAX_PAGE))
                for record in page:
                    sink.write(export_line(record))
                count += len(page)
                if len(page) < MAX_PAGE:
                    break
                cursor = page[-1]["seq"]
        finally:
            if output is not None:
                sink.close()
    if output is not None:
        err_console.print(f"exported {count} records to {output}", markup=False)


@audit_app.command("checkpoint")
def checkpoint(as_json: JsonOpt = False) -> None:
    """Sign a checkpoint of the current head now (store and checkpoint directory), and
    deliver every checkpoint still waiting for the webhook, if one is configured."""
    t = _ready()
    with cli_errors():
        cp = t.audit.checkpoint()
    out: dict[str, Any] = (
        cp.to_dict() if cp else {"tree_size": t.audit.head().size, "already_checkpointed": True}
    )
    webhook = webhook_of(t.audit.sink)
    if webhook is not None:
        webhook.flush(webhook.settings.shutdown_budget)
        status = webhook.status()
        out["webhook"] = {k: status[k] for k in ("webhook", "pending", "last_error")}
        if status["pending"]:
            err_console.print(
                f"{status['pending']} checkpoints not delivered to {status['webhook']} yet "
                f"({status['last_error']}); a running server retries them",
                markup=False,
            )
    if as_json:
        emit_json(out)
    elif cp is None:
        console.print("the current head is already checkpointed", markup=False)
    else:
        kv([("tree size", cp.tree_size), ("head hash", cp.head_hash), ("kid", cp.kid)])


@audit_app.command("archive")
def archive(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for the segment's archive.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Archive the current segment (records + checkpoints) and start a new, linked one.

    Nothing leaves the live ledger; see `tessera audit purge`."""
    t = _ready()
    with cli_errors():
        manifest = t.audit.archive(output)
    out = manifest.to_dict()
    if as_json:
        emit_json(out)
    else:
        kv(
            [
                ("archived segment", manifest.segment),
                ("records", f"{manifest.first_seq}..{manifest.last_seq}"),
                ("head hash", manifest.head_hash),
                ("file", str(output / manifest.records_file)),
                ("sha256", manifest.sha256),
                ("new segment starts at", manifest.last_seq + 1),
            ]
        )


@audit_app.command("purge")
def purge(
    archive: Annotated[
        list[Path],
        typer.Option("--archive", help="Directory of the archived segments. Repeatable."),
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove archived segments' records from the live ledger (database owner only).

    Runs only when the archives and the live ledger verify together; the removal is
    itself recorded in the ledger."""
    if not yes and not typer.confirm("Remove the archived records from the live ledger?"):
        raise typer.Exit(1)
    t = _ready()
    with cli_errors():
        removed = t.audit.purge(archive)
    if as_json:
        emit_json({"removed": removed})
    else:
        console.print(f"removed {removed} archived records from the live ledger", markup=False)
