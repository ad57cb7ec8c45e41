"""``tessera directory load|get|set|delete|list``: the decision point's directory (attributes
of subjects and resources, ``pdp/directory.py``), written to the store; every server node
follows the change through the event log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from tessera.app import Tessera
from tessera.cli.main import ACTOR, JsonOpt, _json_arg, _tessera, app
from tessera.cli.output import cli_errors, console, emit, emit_json, fail, kv, table
from tessera.pdp.directory import DirectoryService

directory_app = typer.Typer(
    no_args_is_help=True, help="The PDP's directory: attributes of subjects and resources."
)
app.add_typer(directory_app, name="directory")

MAX_FILE = 16 << 20
TypeArg = Annotated[str, typer.Argument(help="entity type, e.g. user or document")]
IdArg = Annotated[str, typer.Argument(help="entity id")]


def _service(t: Tessera) -> DirectoryService:
    if t.directory is None:  # pragma: no cover - app.build always wires it
        fail("this build has no directory")
    return t.directory


def read_document(path: Path) -> Any:
    """A directory document from a ``.json``, ``.yaml`` or ``.yml`` file."""
    if path.suffix not in (".json", ".yaml", ".yml"):
        fail(f"{path}: a directory file is .json, .yaml or .yml")
    try:
        if path.stat().st_size > MAX_FILE:
            fail(f"{path} is larger than 16 MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        fail(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}")


@directory_app.command("load")
def load(
    path: Annotated[Path, typer.Argument(help="{type: {id: attributes}} as JSON or YAML")],
    replace: Annotated[
        bool, typer.Option("--replace", help="also delete every entry the file does not hold")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set every entry of a file in one transaction (all or nothing)."""
    document = read_document(path)
    t = _tessera()
    with cli_errors():
        w = _service(t).load(document, actor=ACTOR, replace=replace)
    out = {**w.value.to_dict(), "consistency_token": w.consistency_token}
    emit(
        out,
        as_json,
        lambda: console.print(
            f"directory: {w.value.set} set, {w.value.deleted} deleted", markup=False
        ),
    )


@directory_app.command("get")
def get(etype: TypeArg, eid: IdArg, as_json: JsonOpt = False) -> None:
    """One entry and its attributes."""
    t = _tessera()
    with cli_errors():
        entry = _service(t).get(etype, eid)
    emit(
        entry.to_dict(),
        as_json,
        lambda: kv(
            [
                ("entity", f"{entry.type}:{entry.id}"),
                ("attributes", json.dumps(dict(entry.attributes), sort_keys=True)),
                ("updated", f"{entry.updated_at.isoformat()} by {entry.updated_by}"),
            ]
        ),
    )


@directory_app.command("set")
def set_entry(
    etype: TypeArg,
    eid: IdArg,
    attributes: Annotated[str, typer.Argument(help="JSON object, inline or a file path")],
    as_json: JsonOpt = False,
) -> None:
    """Create or replace an entry's attributes."""
    attrs = _json_arg(attributes, "attributes")
    t = _tessera()
    with cli_errors():
        w = _service(t).set(etype, eid, attrs, actor=ACTOR)
    emit(
        {**w.value.to_dict(), "consistency_token": w.consistency_token},
        as_json,
        lambda: console.print(f"set {etype}:{eid}", markup=False),
    )


@directory_app.command("delete")
def delete(etype: TypeArg, eid: IdArg) -> None:
    """Remove an entry."""
    t = _tessera()
    with cli_errors():
        _service(t).delete(etype, eid, actor=ACTOR)
    console.print(f"deleted {etype}:{eid}", markup=False)


@directory_app.command("list")
def list_entries(
    etype: Annotated[str | None, typer.Argument(help="only this entity type")] = None,
    limit: Annotated[int, typer.Option(help="at most this many (1-1000)")] = 100,
    cursor: Annotated[str | None, typer.Option(help="continue after this page")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Entries in (type, id) order."""
    t = _tessera()
    with cli_errors():
        page = _service(t).list(etype, cursor=cursor, limit=limit)
    if as_json:
        emit_json({"entries": [e.to_dict() for e in page.entries], "next_cursor": page.next_cursor})
        return
    table(
        None,
        ["type", "id", "attributes"],
        [(e.type, e.id, json.dumps(dict(e.attributes), sort_keys=True)) for e in page.entries],
    )
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", markup=False)
