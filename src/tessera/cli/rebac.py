"""``tessera rebac``: models, tuples, queries and OpenFGA store test files, in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from tessera.cli.main import ACTOR, JsonOpt, _json_arg, _tessera, app
from tessera.cli.output import cli_errors, console, emit, emit_json, err_console, fail, kv, table
from tessera.clock import iso
from tessera.errors import TesseraError
from tessera.rebac.jsonmodel import model_to_json
from tessera.rebac.modules import load_modular_model
from tessera.rebac.ports import RelationTuple
from tessera.rebac.service import MAX_BATCH
from tessera.rebac.storage import tuple_from_dict, tuple_to_dict
from tessera.rebac.testfile import AssertionResult, run_store_file

rebac_app = typer.Typer(
    no_args_is_help=True, help="Relationships (OpenFGA models, tuples, check, store tests)."
)
model_app = typer.Typer(no_args_is_help=True, help="The authorization model.")
tuples_app = typer.Typer(no_args_is_help=True, help="Relationship tuples.")
rebac_app.add_typer(model_app, name="model")
rebac_app.add_typer(tuples_app, name="tuples")
app.add_typer(rebac_app, name="rebac")

MAX_FILE = 64 << 20
ContextOpt = Annotated[
    str | None, typer.Option("--context", help="JSON object (inline or a file) for conditions")
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--consistency-token", help="answer at least as fresh as this write"),
]


def _read(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > MAX_FILE:
            fail(f"{what}: {path} is larger than 64 MiB")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{what}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}")


def _load_tuples(path: Path) -> list[RelationTuple]:
    """A JSON or YAML list of tuples in OpenFGA's shape (``condition: {name, context}``),
    plus ``expires_at``."""
    text = _read(path, "tuples")
    try:
        items = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        fail(f"tuples: {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}")
    if isinstance(items, dict) and isinstance(items.get("tuples"), list):
        items = items["tuples"]
    if not isinstance(items, list):
        fail(f"tuples: {path} must hold a list of tuples")
    out: list[RelationTuple] = []
    for i, item in enumerate(items):
        try:
            out.append(tuple_from_dict(item))
        except TesseraError as exc:
            fail(f"tuples: item {i}: {exc.message}")
    return out


def _batches(tuples: list[RelationTuple]) -> Iterator[list[RelationTuple]]:
    for start in range(0, len(tuples), MAX_BATCH):
        yield tuples[start : start + MAX_BATCH]


# -- model ------------------------------------------------------------------------------


@model_app.command("apply")
def model_apply(
    file: Annotated[Path, typer.Argument(help="model.fga (DSL), model.json, or fga.mod")],
    as_json: JsonOpt = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="make the model active even though the active policy bundle pins another "
            "one: every decision on an action mapped to a relation then denies "
            "(model_mismatch) until a bundle pinning this model is applied",
        ),
    ] = False,
) -> None:
    """Validate a model and make it the active one. Refused (exit 2) when the active
    policy bundle pins another model, unless --force (decisions.md 89); to change both,
    put the model in the bundle and run `tessera policy apply DIR --with-model`."""
    with cli_errors():
        source: str | dict[str, Any]
        if file.name == "fga.mod":
            source = model_to_json(load_modular_model(file))
        elif file.suffix == ".json":
            source = _json_arg(str(file), "model")
            if not isinstance(source, dict):
                fail("model: a JSON model must be an object")
        else:
            source = _read(file, "model")
        t = _tessera()
        w = t.rebac.apply_model(source, actor=ACTOR, force=force)
    m = w.value
    types = len(m.json.get("type_definitions", []))
    if as_json:
        emit_json({"id": m.id, "types": types, "consistency_token": w.consistency_token})
    else:
        kv([("model", m.id), ("types", types), ("consistency", w.consistency_token)])
    if not force:
        return
    with cli_errors():
        pin = t.rebac.pinned_model_mismatch(m)
    if pin is not None:
        # decisions.md 85: the bundle's relations are no longer evaluated
        err_console.print(
            f"warning: forced: the active policy bundle (version {pin.version}) pins another "
            "model, so every decision on an action mapped to a relation now DENIES "
            "(model_mismatch) until a bundle pinning this model is applied "
            "(tessera policy apply DIR --with-model)",
            markup=False,
        )


@model_app.command("show")
def model_show(as_json: JsonOpt = False) -> None:
    """Print the active model (DSL; ``--json`` for OpenFGA's JSON form)."""
    with cli_errors():
        m = _tessera().rebac.active_model()
    if as_json:
        emit_json({"id": m.id, "created_at": iso(m.created_at), "json": m.json, "dsl": m.dsl})
    else:
        console.print(f"# model {m.id} applied {iso(m.created_at)}", markup=False)
        console.print(m.dsl.rstrip(), markup=False)


# -- tuples -----------------------------------------------------------------------------


def _write(file: Path, as_json: bool, delete: bool) -> None:
    tuples = _load_tuples(file)
    if not tuples:
        fail("tuples: the file holds no tuples")
    written = deleted = 0
    token: str | None = None
    with cli_errors():
        service = _tessera().rebac
        # Each batch of up to MAX_BATCH tuples is one transaction (all or nothing).
        for batch in _batches(tuples):
            if delete:
                w = service.delete_tuples(batch, actor=ACTOR)
            else:
                w = service.write_tuples(batch, actor=ACTOR)
            written += w.value.written
            deleted += w.value.deleted
            token = w.consistency_token or token
    out = {"written": written, "deleted": deleted, "consistency_token": token}
    if as_json:
        emit_json(out)
    else:
        kv([("written", written), ("deleted", deleted), ("consistency", token)])


@tuples_app.command("write")
def tuples_write(
    file: Annotated[Path, typer.Argument(help="JSON or YAML list of tuples")],
    as_json: JsonOpt = False,
) -> None:
    """Write tuples (each must fit the active model; all or nothing per 10k tuples)."""
    _write(file, as_json, delete=False)


@tuples_app.command("delete")
def tuples_delete(
    file: Annotated[Path, typer.Argument(help="JSON or YAML list of tuples")],
    as_json: JsonOpt = False,
) -> None:
    """Delete tuples by key; keys that do not exist are ignored."""
    _write(file, as_json, delete=True)


@tuples_app.command("read")
def tuples_read(
    object: Annotated[str | None, typer.Option("--object", help="type:id, or type:")] = None,
    relation: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """List stored tuples in key order."""
    with cli_errors():
        page = _tessera().rebac.read_tuples(
            object=object, relation=relation, user=user, cursor=cursor, limit=limit
        )
    rows = [tuple_to_dict(t) for t in page.tuples]
    emit(
        {"tuples": rows, "next_cursor": page.next_cursor},
        as_json,
        lambda: _print_tuples(rows, page.next_cursor),
    )


def _print_tuples(rows: list[dict[str, Any]], cursor: str | None) -> None:
    table(
        "tuples",
        ["object", "relation", "user", "condition", "expires"],
        [
            (
                r["object"],
                r["relation"],
                r["user"],
                r.get("condition", {}).get("name"),
                r.get("expires_at"),
            )
            for r in rows
        ],
    )
    if cursor:
        console.print(f"more: --cursor {cursor}", markup=False)


# -- queries ----------------------------------------------------------------------------


def _print_lines(items: list[str]) -> None:
    for item in items:
        console.print(item, markup=False)


def _context(value: str | None) -> dict[str, Any] | None:
    ctx = _json_arg(value, "--context")
    if ctx is not None and not isinstance(ctx, dict):
        fail("--context: must be a JSON object")
    return ctx


@rebac_app.command("check")
def check(
    user: Annotated[str, typer.Argument(help="e.g. user:alice or agent:<agent id>")],
    relation: str,
    object: Annotated[str, typer.Argument(help="e.g. document:roadmap")],
    context: ContextOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Is USER related to OBJECT as RELATION? Prints allowed or denied (exit 0 either way)."""
    ctx = _context(context)
    with cli_errors():
        r = _tessera().rebac.check(user, relation, object, context=ctx, at_least=token)
    if as_json:
        emit_json({"allowed": r.allowed, "consistency_token": r.consistency_token})
    else:
        console.print(
            f"{'allowed' if r.allowed else 'denied'}: {user} {relation} {object}", markup=False
        )


@rebac_app.command("list-objects")
def list_objects(
    user: str,
    relation: str,
    type: Annotated[str, typer.Argument(help="object type, e.g. document")],
    context: ContextOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every object of TYPE that USER has RELATION on."""
    ctx = _context(context)
    with cli_errors():
        a = _tessera().rebac.list_objects(user, relation, type, context=ctx, at_least=token)
    items = list(a.result.items)
    emit(
        {"objects": items, "complete": a.result.complete},
        as_json,
        lambda: _print_lines(items),
    )


@rebac_app.command("list-users")
def list_users(
    object: str,
    relation: str,
    user_filter: Annotated[
        list[str], typer.Option("--filter", help="user type or userset (group#member)")
    ],
    context: ContextOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Users of the filter types related to OBJECT as RELATION."""
    ctx = _context(context)
    with cli_errors():
        a = _tessera().rebac.list_users(object, relation, user_filter, context=ctx, at_least=token)
    items = list(a.result.items)
    emit(
        {"users": items, "complete": a.result.complete},
        as_json,
        lambda: _print_lines(items),
    )


# -- store test files -------------------------------------------------------------------


def _line(r: AssertionResult) -> str:
    status = "PASS" if r.passed else "FAIL"
    line = f"{status}  {r.test}: {r.kind} {r.query} -> expected {_show(r.expected)}"
    if r.error is not None:
        return f"{line}, error {r.error}"
    if not r.passed:
        return f"{line}, got {_show(r.actual)}"
    return line


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


@rebac_app.command("test")
def store_test(
    file: Annotated[Path, typer.Argument(help="an OpenFGA store test file (.fga.yaml)")],
    as_json: JsonOpt = False,
) -> None:
    """Run an OpenFGA CLI store test file (``fga model test`` format); one line per
    assertion, exit code 1 if any fails. Needs no database."""
    with cli_errors():
        report = run_store_file(file)
    failed = len(report.failures)
    if as_json:
        emit_json(
            {
                "name": report.name,
                "passed": report.passed,
                "results": [
                    {
                        "test": r.test,
                        "kind": r.kind,
                        "query": r.query,
                        "expected": r.expected,
                        "actual": r.actual,
                        "error": r.error,
                        "passed": r.passed,
                    }
                    for r in report.results
                ],
            }
        )
    else:
        for r in report.results:
            console.print(_line(r), markup=False)
        total = len(report.results)
        console.print(f"{total - failed}/{total} assertions passed", markup=False)
    if failed:
        raise typer.Exit(1)
