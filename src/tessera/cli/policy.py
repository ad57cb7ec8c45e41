"""``tessera policy validate|apply|test|versions|activate`` and ``tessera pdp explain``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tessera.cli.main import ACTOR, JsonOpt, _tessera, app
from tessera.cli.output import cli_errors, console, emit, emit_json, fail, table
from tessera.pdp.agents import Caller
from tessera.pdp.model import parse_evaluation
from tessera.pdp.pipeline import StaticBundle
from tessera.policy.bundle import BundleError, PolicyBundle, load_bundle, read_bundle_dir
from tessera.policy.testcases import run_bundle_tests

policy_app = typer.Typer(no_args_is_help=True, help="Policy bundles (Cedar, schema, ReBAC model).")
pdp_app = typer.Typer(no_args_is_help=True, help="The decision point.")
app.add_typer(policy_app, name="policy")
app.add_typer(pdp_app, name="pdp")

DirArg = Annotated[Path, typer.Argument(help="bundle directory")]
CLI_CALLER = Caller("cli", "cli", "cli")


def _load(path: Path) -> PolicyBundle:
    try:
        return load_bundle(read_bundle_dir(path))
    except BundleError as exc:
        for p in exc.problems:
            console.print(f"  {p}", markup=False)
        fail(f"{path}: {len(exc.problems)} problem(s) in the bundle")


@policy_app.command("validate")
def validate(path: DirArg, as_json: JsonOpt = False) -> None:
    """Parse and validate every part: manifest, Cedar policies against the schema, model."""
    bundle = _load(path)
    info = {
        "name": bundle.name,
        "policies": len(bundle.cedar),
        "digest": bundle.digest,
        "actions": sorted(bundle.actions),
        "rebac_model": bundle.rebac_model is not None,
    }
    emit(
        info,
        as_json,
        lambda: console.print(
            f"ok: bundle {bundle.name!r}, {len(bundle.cedar)} policies, "
            f"{len(bundle.actions)} actions, digest {bundle.digest}",
            markup=False,
        ),
    )


@policy_app.command("test")
def run_tests(path: DirArg, as_json: JsonOpt = False) -> None:
    """Run the bundle's test cases (tests/*.yaml); exit 1 when any fails."""
    bundle = _load(path)
    results = run_bundle_tests(bundle)
    failed = [r for r in results if not r.passed]
    if as_json:
        emit_json([r.__dict__ for r in results])
    else:
        table(
            None,
            ["file", "case", "expected", "actual", "result"],
            [
                (r.file, r.name, r.expected, r.actual, "ok" if r.passed else f"FAIL {r.problem}")
                for r in results
            ],
        )
        console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed", markup=False)
    if failed:
        raise typer.Exit(1)


@policy_app.command("apply")
def apply(
    path: DirArg,
    as_json: JsonOpt = False,
    with_model: Annotated[
        bool,
        typer.Option(
            "--with-model",
            help="also make the bundle's pinned .fga model the active ReBAC model, in the "
            "same transaction (without it, a bundle pinning another model is refused)",
        ),
    ] = False,
) -> None:
    """Validate, then store the bundle as the new active version (atomically). A bundle
    that pins a ReBAC model must pin the active one (or pass --with-model)."""
    files = read_bundle_dir(path)
    _load(path)
    t = _tessera()
    with cli_errors():
        stored = t.pdp.policies.apply(files, actor=ACTOR, with_model=with_model)
    emit(
        stored.summary(),
        as_json,
        lambda: console.print(
            f"applied {stored.name!r} as version {stored.version} ({stored.digest})", markup=False
        ),
    )


@policy_app.command("versions")
def versions(as_json: JsonOpt = False) -> None:
    """Stored bundle versions, newest first."""
    t = _tessera()
    with cli_errors():
        items = t.pdp.policies.versions()
    emit(
        [b.summary() for b in items],
        as_json,
        lambda: table(
            None,
            ["version", "name", "active", "created", "digest"],
            [
                (
                    b.version,
                    b.name,
                    "yes" if b.active else "",
                    b.created_at.isoformat(),
                    b.digest[:23],
                )
                for b in items
            ],
        ),
    )


@policy_app.command("activate")
def activate(
    version: int,
    with_model: Annotated[
        bool,
        typer.Option(
            "--with-model",
            help="also make the version's pinned .fga model the active ReBAC model, in the "
            "same transaction (without it, a version pinning another model is refused)",
        ),
    ] = False,
) -> None:
    """Make a stored version the active one again (roll back). A version that pins a
    ReBAC model must pin the active one (or pass --with-model), as for apply."""
    t = _tessera()
    with cli_errors():
        t.pdp.policies.activate(version, actor=ACTOR, with_model=with_model)
    console.print(f"version {version} is active", markup=False)


@pdp_app.command("explain")
def explain(
    request: Annotated[Path, typer.Argument(help="AuthZEN evaluation request (JSON file)")],
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="explain against this directory, not the active version"),
    ] = None,
    caller: Annotated[
        str | None,
        typer.Option("--as", help="evaluate as this service (id or name): agent tokens name it"),
    ] = None,
) -> None:
    """Evaluate one request in-process and print the decision with its full trace."""
    try:
        body = json.loads(request.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"{request}: not a JSON request ({exc})")
    with cli_errors():
        req = parse_evaluation(body)
    t = _tessera()
    who = CLI_CALLER
    if caller is not None:
        with t.store.read() as tx:
            svc = tx.services.get(caller)
        if svc is None:
            fail(f"no service {caller!r}")
        who = Caller(svc.id, svc.name, "cli")
    point = t.pdp.point
    if bundle is not None:
        point.bundles = StaticBundle(_load(bundle))
    with cli_errors():
        decision = point.decide(req, who)
    emit_json(decision.to_authzen(explain=True))
