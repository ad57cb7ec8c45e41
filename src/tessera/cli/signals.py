"""``tessera signals``: SSF streams (list, create, delete) and following the event log, in-process
against ``TESSERA_DATABASE_URL`` (running servers see the changes through the log)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from tessera.cli.main import JsonOpt, _tessera, app
from tessera.cli.output import cli_errors, console, emit, fail, kv, table
from tessera.clock import iso
from tessera.signals.caep import CAEP, EVENTS_SUPPORTED, RISC
from tessera.signals.events import Event
from tessera.signals.model import POLL, PUSH
from tessera.signals.tailer import EventTailer, TailerSettings

signals_app = typer.Typer(no_args_is_help=True, help="Shared Signals streams and the event log.")
streams_app = typer.Typer(no_args_is_help=True, help="SSF streams this Tessera transmits.")
signals_app.add_typer(streams_app, name="streams")
app.add_typer(signals_app, name="signals")


def _event_uri(name: str) -> str:
    """``session-revoked`` → the CAEP URI (RISC for ``account-disabled``); URIs pass."""
    if name.startswith("https://"):
        return name
    for base in (CAEP, RISC):
        if base + name in EVENTS_SUPPORTED:
            return base + name
    fail(
        f"--event: unknown event {name!r}; one of {', '.join(_short(e) for e in EVENTS_SUPPORTED)}"
    )


def _short(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


@streams_app.command("list")
def streams_list(as_json: JsonOpt = False) -> None:
    """Every stream with its receiver, delivery method, status and delivery counts."""
    with cli_errors():
        streams = _tessera().signals.transmitter.list_all()
    emit(
        streams,
        as_json,
        lambda: table(
            "SSF streams",
            ["stream", "receiver", "method", "endpoint", "status", "events", "deliveries"],
            [
                (
                    s["stream_id"],
                    s["aud"],
                    "push" if s["delivery"]["method"] == PUSH else "poll",
                    s["delivery"].get("endpoint_url"),
                    s["status"],
                    ", ".join(_short(e) for e in s["events_delivered"]),
                    " ".join(f"{k}={v}" for k, v in sorted(s["deliveries"].items())),
                )
                for s in streams
            ],
        ),
    )


@streams_app.command("create")
def streams_create(
    service: Annotated[str, typer.Option(help="the receiver: a registered service id or name")],
    push: Annotated[str | None, typer.Option(help="push SETs to this URL (RFC 8935)")] = None,
    poll: Annotated[bool, typer.Option("--poll", help="the receiver polls (RFC 8936)")] = False,
    event: Annotated[
        list[str] | None, typer.Option(help="event to deliver, e.g. session-revoked (repeat)")
    ] = None,
    description: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a stream for a receiver, as its ``POST /ssf/streams`` would."""
    if (push is None) == (not poll):
        fail("give exactly one of --push URL or --poll")
    events = [_event_uri(e) for e in (event or [_short(e) for e in EVENTS_SUPPORTED])]
    delivery: dict[str, Any] = (
        {"method": PUSH, "endpoint_url": push} if push is not None else {"method": POLL}
    )
    body: dict[str, Any] = {"delivery": delivery, "events_requested": events}
    if description:
        body["description"] = description
    with cli_errors():
        t = _tessera()
        svc = t.identity.get_service(service)
        cfg = t.signals.transmitter.create(svc.id, body)
    emit(
        cfg,
        as_json,
        lambda: kv(
            [
                ("stream", cfg["stream_id"]),
                ("receiver", cfg["aud"]),
                ("delivery", cfg["delivery"]),
                ("events", [_short(e) for e in cfg["events_delivered"]]),
            ]
        ),
    )


@streams_app.command("delete")
def streams_delete(stream_id: str, as_json: JsonOpt = False) -> None:
    """Delete a stream and its undelivered SETs."""
    with cli_errors():
        _tessera().signals.transmitter.delete_any(stream_id)
    emit({"deleted": stream_id}, as_json, lambda: console.print(f"deleted {stream_id}"))


def _print(events: Sequence[Event], as_json: bool) -> None:
    for e in events:
        if as_json:  # JSON Lines: one event per line
            sys.stdout.write(json.dumps(e.to_dict(), sort_keys=True) + "\n")
        else:
            payload = json.dumps(e.payload, sort_keys=True, separators=(",", ":"))
            line = f"{e.seq:>8}  {iso(e.created_at)}  {e.type:<24} {e.subject:<24} {e.actor}"
            console.print(f"{line}  {payload[:200]}", markup=False, highlight=False)


@signals_app.command("tail")
def tail(
    after: Annotated[
        int | None, typer.Option(help="start after this sequence (default: the last 10)")
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="stop after this many events (default: follow)")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.05, max=60, help="poll interval, s")] = 0.2,
    as_json: JsonOpt = False,
) -> None:
    """Follow the event log, as every node's tailer does (Ctrl-C stops)."""
    with cli_errors():
        t = _tessera()
        start = max(0, t.store.event_head() - 10) if after is None else after
        seen = 0

        def show(_tx: Any, events: Sequence[Event]) -> None:
            nonlocal seen
            batch = list(events if count is None else events[: count - seen])
            _print(batch, as_json)
            seen += len(batch)

        settings = TailerSettings(staleness=max(1.0, interval * 5), poll_interval=interval)
        tailer = EventTailer(t.store, t.clock, settings, start_at=start)
        tailer.subscribe("cli", show)
        try:
            while True:
                tailer.catch_up()
                if count is not None and seen >= count:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
        finally:
            t.close()
