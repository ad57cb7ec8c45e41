"""``tessera behavior show|drift|rebaseline|simulate``: baselines, drift findings, and the
synthetic detection benchmark (docs/behavior.md, docs/behavior-generator.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tessera.app import Tessera
from tessera.behavior.service import BehaviourService
from tessera.behavior.simulate import run as run_simulation
from tessera.behavior.simulate import table as detection_table
from tessera.cli.main import JsonOpt, _tessera, app
from tessera.cli.output import cli_errors, console, emit, fail, kv, table

behavior_app = typer.Typer(
    no_args_is_help=True, help="Behaviour baselines, drift findings and the simulator."
)
app.add_typer(behavior_app, name="behavior")

SYNTHETIC = (
    "Synthetic workload (docs/behavior-generator.md): these figures describe the detector on "
    "this generator, not on real agents."
)


def _service(t: Tessera) -> BehaviourService:
    if t.behaviour is None:
        fail("the behaviour engine is off (TESSERA_BEHAVIOUR=off)")
    return t.behaviour


def _agent_id(t: Tessera, ref: str) -> tuple[str, str]:
    """(id, name) of a registered agent, or the reference itself for one that is not."""
    with t.store.read() as tx:
        agent = tx.agents.get(ref)
    return (agent.id, agent.name) if agent is not None else (ref, ref)


@behavior_app.command("show")
def show(
    agent: Annotated[str, typer.Argument(help="agent id or name")], as_json: JsonOpt = False
) -> None:
    """An agent's baseline: learned calls, warm-up, top tools and transitions, volumes."""
    t = _tessera()
    with cli_errors():
        aid, name = _agent_id(t, agent)
        summary = _service(t).summary(aid)
    summary["name"] = name

    def human() -> None:
        kv(
            [
                ("agent", f"{name} ({aid})"),
                ("model", summary["model_digest"]),
                ("risk level", summary["level"]),
                (
                    "learned calls",
                    f"{summary['learned_calls']} (observed {summary['observed_calls']})",
                ),
                ("warm", f"{summary['warm']} (after {summary['warmup_calls']} calls)"),
                (
                    "reference window",
                    f"{summary['reference_calls']} calls, "
                    + ("frozen" if summary["reference_frozen"] else "filling"),
                ),
                ("open drift", ", ".join(summary["open_drift"]) or "none"),
                ("active hours (UTC)", summary["active_hours_utc"]),
            ]
        )
        vol = summary["median_volume_bytes"]
        table(
            "tools",
            ["tool", "share", "median bytes"],
            [(tool, f"{share:.1%}", vol.get(tool, "")) for tool, share in summary["top_tools"]],
        )
        table(
            "transitions",
            ["transition", "share"],
            [(tr, f"{share:.1%}") for tr, share in summary["top_transitions"]],
        )

    emit(summary, as_json, human)


@behavior_app.command("drift")
def drift(
    agent: Annotated[str | None, typer.Argument(help="only this agent (id or name)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="include resolved findings")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Drift findings (KL divergence above the threshold) and each agent's current KL."""
    t = _tessera()
    with cli_errors():
        svc = _service(t)
        svc.ensure_loaded()
        aid = _agent_id(t, agent)[0] if agent is not None else None
        findings = svc.findings(agent=aid, status=None if all_ else "open")
        current: list[dict[str, Any]] = []
        for state in svc.engine.iter_agents():
            if aid is not None and state.agent != aid:
                continue
            now = svc.engine.drift_now(state.agent)
            if now:
                current.append({"agent": state.agent, "name": _agent_id(t, state.agent)[1], **now})
    names = {f.agent: _agent_id(t, f.agent)[1] for f in findings}
    out = {
        "threshold": svc.settings.drift_threshold,
        "findings": [f.to_dict() for f in findings],
        "current": current,
    }

    def human() -> None:
        which = "all" if all_ else "open"
        table(
            f"drift findings ({which}; threshold {svc.settings.drift_threshold})",
            ["id", "agent", "kind", "severity", "status", "kl", "window", "created"],
            [
                (
                    f.id,
                    names.get(f.agent, f.agent),
                    f.kind,
                    f.severity,
                    f.status,
                    f"{f.kl:.3f}",
                    f.window,
                    f.created_at.isoformat(timespec="seconds"),
                )
                for f in findings
            ],
        )
        for f in findings[:5]:
            console.print(f"{f.id}: {f.remediation}", markup=False)
        table(
            "current divergence (recent window vs frozen reference)",
            ["agent", "window", "reference", "kl tools", "kl transitions"],
            [
                (
                    c["name"],
                    c["window"],
                    "frozen" if c["reference_frozen"] else "filling",
                    f"{c['kl_tools']:.3f}",
                    f"{c['kl_transitions']:.3f}",
                )
                for c in current
            ],
        )

    emit(out, as_json, human)


@behavior_app.command("rebaseline")
def rebaseline(
    agent: Annotated[str, typer.Argument(help="agent id or name")], as_json: JsonOpt = False
) -> None:
    """Accept an agent's current behaviour: its recent window becomes its frozen reference
    and its open drift findings are resolved."""
    t = _tessera()
    with cli_errors():
        aid, name = _agent_id(t, agent)
        _service(t).rebaseline(aid)
    emit(
        {"agent": aid, "name": name, "rebaselined": True},
        as_json,
        lambda: console.print(f"re-baselined {name}: open drift findings resolved", markup=False),
    )


@behavior_app.command("simulate")
def simulate(
    seed: Annotated[int, typer.Option(help="generator seed")] = 7,
    scale: Annotated[
        float, typer.Option(help="sessions per day multiplier (0 < scale <= 10)")
    ] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Run the built-in workload generator through the detector and print the detection
    table (per attack type) and the false-positive rates. Needs no server or database."""
    if not 0 < scale <= 10:
        fail("--scale must be in (0, 10]")
    r = run_simulation(seed, scale)
    rows = detection_table(r)
    out = {
        "synthetic": True,
        "note": SYNTHETIC,
        "seed": r.seed,
        "scale": r.scale,
        "events": r.events,
        "detection": rows,
        "false_positives": {
            "benign_calls": r.benign_calls,
            "flagged_calls": r.benign_flagged,
            "high_calls": r.benign_high,
            "per_call": round(r.call_fp, 5),
            "benign_sessions": r.benign_sessions,
            "flagged_sessions": r.benign_sessions_flagged,
            "per_session": round(r.session_fp, 5),
            "drift_agents": r.drift_agents,
            "drift_agents_flagged": r.drift_agents_flagged,
            "drift_per_agent": round(r.drift_fp, 5),
        },
    }

    def human() -> None:
        table(
            f"detection (seed {r.seed}, scale {r.scale}, {r.events} calls)",
            ["attack", "instances", "detected", "rate", "reached high"],
            [
                (
                    row["attack"],
                    row["instances"],
                    row["detected"],
                    f"{float(row['detection_rate']):.1%}",  # type: ignore[arg-type]
                    row["reached_high"],
                )
                for row in rows
            ],
        )
        table(
            "false positives (benign traffic, evaluation days)",
            ["measure", "flagged", "of", "rate"],
            [
                (
                    "calls scored medium or high",
                    r.benign_flagged,
                    r.benign_calls,
                    f"{r.call_fp:.2%}",
                ),
                (
                    "sessions with such a call",
                    r.benign_sessions_flagged,
                    r.benign_sessions,
                    f"{r.session_fp:.2%}",
                ),
                (
                    "agents with a drift finding",
                    r.drift_agents_flagged,
                    r.drift_agents,
                    f"{r.drift_fp:.1%}",
                ),
            ],
        )
        console.print(SYNTHETIC, markup=False)

    emit(out, as_json, human)
