"""Decision point: AuthZEN evaluations over HTTP (one uvicorn worker, 32 connections,
loopback, SQLite) for a realistic agent request — a cached session token (liveness read
from the store on every decision), a 3-hop ReBAC check (document → folder → team →
agent) and 100 Cedar policies — batches of 100, the in-process decision, and 100 vs
1,000 policies (Cedar slicing)."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from bench_tokens import ASSERTION, TESSERA, Fixture, _cli
from harness import Row, latency_row, percentile, time_each

from tessera.crypto.dpop import create_proof
from tessera.sdk import client_assertion, model_attestation

BUNDLE = Path(__file__).resolve().parents[1] / "examples" / "policy-bundle"
CONCURRENCY = 32
FILLER_ACTIONS = 50
DOCUMENTS = 100  # document:doc-0..99, all in folder research-notes (3-hop ReBAC)
# The session's tool_calls budget: every allowed AuthZEN evaluation spends one unit
# (docs/pdp.md "Budgets at decision time"), so the demo ceiling's 50 would turn the run
# into budget_exhausted denies after 50 decisions. The bench keeps the session metered
# (the conditional decrement is in every measured decision) with a budget the run fits in.
BENCH_TOOL_CALLS = 10_000_000


def make_bundle(dest: Path, n_policies: int, same_action_every: int = 10) -> Path:
    """The demo bundle plus filler policies up to ``n_policies``: one in
    ``same_action_every`` on the benchmarked action (conditions that never hold), the rest
    on 50 other actions (0: none on the benchmarked action)."""
    shutil.copytree(BUNDLE, dest)
    actions = [f"filler/a{i}" for i in range(FILLER_ACTIONS)]
    manifest = (dest / "bundle.yaml").read_text()
    extra = "".join(f"  {a}: {{relation: null}}\n" for a in actions)
    manifest = manifest.replace("actions:\n", "actions:\n" + extra, 1)
    (dest / "bundle.yaml").write_text(manifest)
    schema = (dest / "schema.cedarschema").read_text()
    names = ", ".join(json.dumps(a) for a in actions)
    applies = "principal: [agent, user], resource: [document], context: Ctx"
    schema += f"action {names}\n  appliesTo {{ {applies} }};\n"
    (dest / "schema.cedarschema").write_text(schema)
    out = []
    for i in range(n_policies - 4):
        if same_action_every and i % same_action_every == 0:
            out.append(
                f'@id("f{i}")\nforbid (principal is agent, action == Action::"docs/read", '
                f"resource) when {{ principal.depth > {6 + i} }};"
            )
        else:
            out.append(
                f'@id("f{i}")\npermit (principal is agent, action == Action::"filler/a{i % 50}", '
                f'resource is document) when {{ principal.operator == "op_{i}" }};'
            )
    (dest / "filler.cedar").write_text("\n".join(out) + "\n")
    return dest


def make_shaped_bundle(dest: Path, n_policies: int, agent: str) -> Path:
    """The issue's shape (#5): the demo bundle plus per-resource-type and per-principal
    policies up to ``n_policies``, about 10 applicable to any request whatever the size.
    Half the filler is 6 policies per resource type (``document`` is one of the types),
    half 4 per agent (``agent`` is one of them: 2 on ``docs/read``, 2 on other actions).
    The benchmarked request (``agent`` reads a document) has 2 demo + 6 + 2 = 10."""
    shutil.copytree(BUNDLE, dest)
    filler = n_policies - 4
    per_type, per_agent = filler // 2, filler - filler // 2
    n_types = max(1, per_type // 6)
    types = ["document"] + [f"rt{k}" for k in range(1, n_types)]
    actions = [f"filler/a{i}" for i in range(FILLER_ACTIONS)]
    manifest = (dest / "bundle.yaml").read_text()
    extra = "".join(f"  {a}: {{relation: null}}\n" for a in actions)
    (dest / "bundle.yaml").write_text(manifest.replace("actions:\n", "actions:\n" + extra, 1))
    schema = (dest / "schema.cedarschema").read_text()
    schema += "".join(f"entity {t};\n" for t in types[1:])
    resources = ", ".join(types)
    schema = schema.replace("resource: [document]", f"resource: [{resources}]")
    names = ", ".join(json.dumps(a) for a in actions)
    applies = f"principal: [agent, user], resource: [{resources}], context: Ctx"
    schema += f"action {names}\n  appliesTo {{ {applies} }};\n"
    (dest / "schema.cedarschema").write_text(schema)
    out = []
    for i in range(per_type):
        rtype = types[min(i // 6, n_types - 1)]
        if i % 2:
            out.append(
                f'@id("t{i}")\nforbid (principal is agent, action, resource is {rtype}) '
                f"when {{ principal.depth > {6 + i} }};"
            )
        else:
            out.append(
                f'@id("t{i}")\npermit (principal is agent, action, resource is {rtype}) '
                f'when {{ context.risk.level == "lvl{i}" }};'
            )
    for i in range(per_agent):
        who = agent if i // 4 == 0 else f"agt_bench{i // 4}"
        action = "docs/read" if i % 4 < 2 else f"filler/a{i % FILLER_ACTIONS}"
        out.append(
            f'@id("p{i}")\npermit (principal == agent::{json.dumps(who)}, '
            f'action == Action::"{action}", resource is document) '
            f'when {{ principal.operator == "op_{i}" }};'
        )
    (dest / "filler.cedar").write_text("\n".join(out) + "\n")
    return dest


class PdpFixture(Fixture):
    def __init__(self, data: Path, port: int, bundle: Path) -> None:
        super().__init__(data, port)
        # One session hammered by 32 connections is a burst against the demo's seeded
        # baseline (the engine would deny and revoke it); a warm-up it never reaches keeps
        # the engine in the path (features, lookups, learning) without judging the load.
        self.env["TESSERA_BEHAVIOUR_WARMUP_CALLS"] = "1000000"
        _cli(self.env, "policy", "apply", str(bundle))
        self._seed()

    def _seed(self) -> None:
        """Before the server starts: raise the agent's ceiling budget (there is no admin
        API to change a ceiling) and put ``DOCUMENTS`` documents in the research-notes
        folder, so batches ask about distinct resources."""
        from dataclasses import replace

        from tessera.app import build
        from tessera.config import load_config
        from tessera.rebac import RelationTuple

        t = build(load_config(self.env))
        try:
            with t.store.write() as tx:
                agent = tx.agents.get(self.agent)
                budgets = {**agent.ceiling.budgets, "tool_calls": BENCH_TOOL_CALLS}
                tx.agents.set_ceiling(
                    self.agent, replace(agent.ceiling, budgets=budgets), t.clock.now()
                )
            docs = [
                RelationTuple(f"document:doc-{i}", "parent", "folder:research-notes")
                for i in range(DOCUMENTS)
            ]
            t.rebac.write_tuples(docs, actor="bench")
        finally:
            t.close()

    def session_token(self) -> str:
        form = {
            "grant_type": "client_credentials",
            "resource": "mcp-gateway",
            "authorization_details": json.dumps(
                [{"type": "tessera_session", "tools": ["docs/read"], "data_scope": ["doc:*"]}]
            ),
            "client_assertion_type": ASSERTION,
            "client_assertion": client_assertion(self.key, self.agent, self.endpoint),
            "model_attestation": model_attestation(
                self.op_key, self.op_id, self.agent, self.digest, self.jkt, self.base
            ),
        }
        proof = create_proof(self.dpop, htm="POST", htu=self.endpoint, iat=time.time())
        r = httpx.post(self.endpoint, data=form, headers={"DPoP": proof})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def service_token(self) -> str:
        form = {
            "grant_type": "client_credentials",
            "scope": "pdp.evaluate",
            "client_assertion_type": ASSERTION,
            "client_assertion": client_assertion(self.svc_key, self.svc_id, self.endpoint),
        }
        r = httpx.post(self.endpoint, data=form)
        r.raise_for_status()
        return str(r.json()["access_token"])

    def request(self, token: str, resource: str = "roadmap") -> dict[str, Any]:
        return {
            "subject": {
                "type": "agent",
                "id": self.agent,
                "properties": {"token": token, "jkt": self.jkt},
            },
            "action": {"name": "docs/read"},
            "resource": {"type": "document", "id": resource},
        }

    def batch(self, token: str, size: int = DOCUMENTS) -> dict[str, Any]:
        """AuthZEN §7: one subject and action, ``size`` distinct documents."""
        body = self.request(token)
        return {
            "subject": body["subject"],
            "action": body["action"],
            "evaluations": [
                {"resource": {"type": "document", "id": f"doc-{i % DOCUMENTS}"}}
                for i in range(size)
            ],
        }


_ALLOWED = re.compile(rb'"decision":\s*true')


async def _fire(
    url: str, bodies: list[Any], auth: str, *, method: str = "POST", expect: int = 1
) -> tuple[list[float], float, int]:
    """A minimal keep-alive HTTP/1.1 load generator on raw asyncio streams: httpx's async
    client saturates a core by itself at 32 connections (``/healthz`` tops out near 80/s
    here), which would measure the client, not the server. A response counts as an error
    unless it is a 200 with ``expect`` allowed decisions (POST) or a 200 (GET)."""
    host, _, rest = url.removeprefix("http://").partition("/")
    hostname, _, port = host.partition(":")
    lat: list[float] = []
    errors = 0

    def raw(body: Any) -> bytes:
        data = json.dumps(body).encode() if method == "POST" else b""
        head = (
            f"{method} /{rest} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        return head.encode() + data

    queue = [raw(b) for b in bodies]  # encoded up front: the client's CPU is not measured

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(hostname, int(port))
        try:
            while queue:
                message = queue.pop()
                t0 = time.perf_counter()
                writer.write(message)
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                payload = await reader.readexactly(length)
                lat.append((time.perf_counter() - t0) * 1e6)
                ok = b" 200 " in status and (
                    method != "POST" or len(_ALLOWED.findall(payload)) == expect
                )
                errors += not ok
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - t0
    return lat, len(bodies) / elapsed, errors


def _serve(fx: PdpFixture, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``tessera serve`` with the fixture's environment (or ``env``), once it answers."""
    proc = subprocess.Popen(
        [TESSERA, "serve"], env=env or fx.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(300):
        try:
            httpx.get(f"{fx.base}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc


def http_rows(fx: PdpFixture, token: str, n: int, batches: int, rounds: int) -> list[Row]:
    """/healthz, single evaluations and batches of 100, alternating for ``rounds`` rounds
    against the running server, so the evaluation figures sit next to the stack's baseline
    measured at the same moment. Throughputs are medians over the rounds; latencies pool
    every round; the ratio is the median of the per-round ratios."""
    auth = fx.service_token()
    base = fx.base
    singles = [fx.request(token, f"doc-{i % DOCUMENTS}") for i in range(n)]
    batch = fx.batch(token)
    asyncio.run(_fire(f"{base}/access/v1/evaluation", singles[:100], auth))  # warm caches
    asyncio.run(_fire(f"{base}/access/v1/evaluations", [batch] * 4, auth, expect=DOCUMENTS))
    runs: dict[str, list[tuple[list[float], float, int]]] = {"h": [], "e": [], "b": []}
    for _ in range(rounds):
        runs["h"].append(asyncio.run(_fire(f"{base}/healthz", [None] * n, auth, method="GET")))
        runs["e"].append(asyncio.run(_fire(f"{base}/access/v1/evaluation", singles, auth)))
        runs["b"].append(
            asyncio.run(
                _fire(f"{base}/access/v1/evaluations", [batch] * batches, auth, expect=DOCUMENTS)
            )
        )

    def row(key: str, name: str, unit: str, per: int, what: str) -> Row:
        lat = [x for r in runs[key] for x in r[0]]
        rate = statistics.median(r[1] for r in runs[key]) * per
        errors = sum(r[2] for r in runs[key])
        note = f"{rate:,.0f} {what}/s, {CONCURRENCY} conns, {errors} errors"
        if key != "h":
            ratio = statistics.median(
                e[1] * per / h[1] for e, h in zip(runs[key], runs["h"], strict=True)
            )
            note += f", {ratio:.2f}x /healthz"
        return Row(name, unit, statistics.median(lat), percentile(lat, 99), len(lat), note)

    return [
        row("h", "HTTP GET /healthz (baseline of the stack)", "µs/op", 1, "req"),
        row("e", "HTTP evaluation (agent, 3-hop ReBAC, 100 policies)", "µs/op", 1, "decisions"),
        row("b", "HTTP evaluations, batch of 100 distinct documents", "µs/batch", 100, "decisions"),
    ]


def _rows(n: int, batches: int, inproc: int, rounds: int) -> list[Row]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        b100 = make_bundle(Path(tmp) / "b100", 100)
        fx = PdpFixture(Path(tmp) / "data", port, b100)
        proc = _serve(fx)
        try:
            token = fx.session_token()
            rows = http_rows(fx, token, n, batches, rounds)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        rows += _in_process(fx, token, Path(tmp), inproc)
    return rows


def _cpu_each(fn: Callable[[], object], n: int) -> list[float]:
    """Per-call CPU time of this process in microseconds (steadier than wall time when the
    machine is shared)."""
    for _ in range(10):
        fn()
    out = []
    for _ in range(n):
        t0 = time.process_time_ns()
        fn()
        out.append((time.process_time_ns() - t0) / 1000)
    return out


def _last_call(owner: Any, name: str, run: Callable[[], Any]) -> tuple[Any, Any, tuple[Any, ...]]:
    """Run ``run`` with ``owner.name`` watched: what ``run`` returned, the last call of
    ``owner.name`` it made (the same arguments) as a callable, and those arguments."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    real = getattr(owner, name)

    def spy(*args: Any, **kw: Any) -> Any:
        seen.append((args, kw))
        return real(*args, **kw)

    setattr(owner, name, spy)
    try:
        out = run()
    finally:
        setattr(owner, name, real)
    args, kw = seen[-1]
    return out, functools.partial(real, *args, **kw), args


def _captured_cedar(point: Any, bundle: Any, req: Any, caller: Any) -> tuple[Any, Any, Any]:
    """One decision, and the Cedar call it made (the same arguments) as a callable."""
    return _last_call(bundle.cedar, "authorize", lambda: point.decide(req, caller))


def _engine_call(cedar_call: Callable[[], object]) -> Callable[[], object]:
    """The ``cedarpy.is_authorized`` call a Cedar stage makes (its request, policy slice
    and entity handles, already built and cached), as a callable: the engine alone."""
    import cedarpy

    return _last_call(cedarpy, "is_authorized", cedar_call)[1]


def _in_process(fx: PdpFixture, token: str, tmp: Path, n: int) -> list[Row]:
    """``DecisionPoint.decide`` in process (no HTTP, no result cache): the issue's bundle
    shape at 100 and 1,000 policies (about 10 applicable), the old filler shape (1 in 10
    on the benchmarked action: ~100 applicable at 1,000) and none on the action, the Cedar
    stage alone, and ``decide_many`` over a batch of 100 distinct documents."""
    from tessera.app import build
    from tessera.config import load_config
    from tessera.pdp.agents import Caller
    from tessera.pdp.model import parse_evaluation
    from tessera.pdp.pipeline import StaticBundle
    from tessera.policy.bundle import load_bundle, read_bundle_dir
    from tessera.rebac import RelationTuple

    bundles = [
        ("100 policies (~10 applicable)", make_shaped_bundle(tmp / "s100", 100, fx.agent)),
        ("1000 policies (~10 applicable)", make_shaped_bundle(tmp / "s1000", 1000, fx.agent)),
        ("1000 policies, old shape (~100 applicable)", make_bundle(tmp / "o1000", 1000)),
        ("1000 policies, none on this action", make_bundle(tmp / "n1000", 1000, 0)),
    ]
    t = build(load_config(fx.env))
    caller = Caller(fx.svc_id, "mcp-gateway", "token")
    body = fx.request(token)
    req = parse_evaluation(body)
    docs = [f"bench-{i}" for i in range(100)]
    t.rebac.write_tuples(
        [RelationTuple(f"document:{d}", "parent", "folder:research-notes") for d in docs],
        actor="bench",
    )
    batch = [parse_evaluation({**body, "resource": {"type": "document", "id": d}}) for d in docs]
    point = t.pdp.point
    rows = []
    base: dict[str, float] = {}
    loaded: dict[str, Any] = {}
    for label, path in bundles:
        bundle = load_bundle(read_bundle_dir(path))
        loaded[label] = bundle
        point.bundles = StaticBundle(bundle, 1)
        d, cedar_call, args = _captured_cedar(point, bundle, req, caller)
        if not d.allowed:
            raise RuntimeError(f"benchmark request denied: {d.reasons}")
        applicable = len(bundle.cedar.slice_ids("docs/read", "document", args[0], args[2]))
        wall = time_each(lambda: point.decide(req, caller), n)
        cpu = _cpu_each(lambda: point.decide(req, caller), n)
        p50 = statistics.median(cpu)
        ratio = ""
        if label.startswith("100 "):
            base["decide"] = p50
        elif "decide" in base:
            ratio = f", {p50 / base['decide']:.2f}x the 100-policy CPU time"
        rows.append(
            latency_row(
                f"in-process decision, {label}",
                wall,
                f"CPU p50 {p50:.0f} µs{ratio}; {applicable} in the slice; uncached; "
                "token verified once, liveness + 3-hop ReBAC + Cedar each call",
            )
        )
        cedar = _cpu_each(cedar_call, n)
        c50 = statistics.median(cedar)
        ratio = ""
        if label.startswith("100 "):
            base["cedar"] = c50
        elif "cedar" in base:
            ratio = f", {c50 / base['cedar']:.2f}x"
        rows.append(
            latency_row(
                f"  Cedar stage alone, {label}",
                time_each(cedar_call, n),
                f"CPU p50 {c50:.0f} µs{ratio}; the pipeline's own principal and entities",
            )
        )
        if label.startswith("100 "):
            engine_call = _engine_call(cedar_call)
            engine = _cpu_each(engine_call, n)
            rows.append(
                latency_row(
                    f"    cedarpy call alone, {label}",
                    time_each(engine_call, n),
                    f"CPU p50 {statistics.median(engine):.0f} µs; cedarpy.is_authorized with "
                    "the stage's cached handles: the engine's floor under any decision",
                )
            )
            if not all(x.allowed for x in point.decide_many(batch, caller, consume=False)):
                raise RuntimeError("benchmark batch denied")
            rounds = max(5, n // 20)
            per = [
                v / len(batch)
                for v in _cpu_each(lambda: point.decide_many(batch, caller, consume=False), rounds)
            ]
            loop = [
                v / len(batch)
                for v in _cpu_each(lambda: [point.decide(r, caller) for r in batch], rounds)
            ]
            rows.append(
                Row(
                    f"in-process decide_many, batch of 100 distinct documents, {label}",
                    "µs/decision",
                    statistics.median(per),
                    percentile(per, 99),
                    rounds,
                    f"CPU time per decision; a loop of decide: {statistics.median(loop):.0f} "
                    f"µs ({statistics.median(loop) / statistics.median(per):.2f}x); "
                    f"{1e6 / statistics.median(per):,.0f} decisions/s on one core",
                )
            )
    rows.append(_interleaved_ratio(point, loaded, req, caller, n))
    t.close()
    return rows


def _interleaved_ratio(point: Any, loaded: dict[str, Any], req: Any, caller: Any, n: int) -> Row:
    """1,000 against 100 policies (~10 applicable each) measured in alternating rounds, so
    a machine that slows down or speeds up during the run moves both sides alike: the
    median of the per-round ratios of CPU p50s."""
    from tessera.pdp.pipeline import StaticBundle

    small, large = (loaded[k] for k in loaded if "~10 applicable" in k)
    ratios = []
    for _ in range(7):
        p50 = []
        for bundle in (small, large):
            point.bundles = StaticBundle(bundle, 1)
            p50.append(statistics.median(_cpu_each(lambda: point.decide(req, caller), n // 4)))
        ratios.append(p50[1] / p50[0])
    return Row(
        "in-process decision, 1000 / 100 policies (~10 applicable), alternating",
        "x",
        statistics.median(ratios),
        None,
        len(ratios),
        f"{statistics.median(ratios):.2f}x: median of per-round CPU p50 ratios, rounds "
        f"{min(ratios):.2f} to {max(ratios):.2f}",
    )


def run(quick: bool) -> list[Row]:
    return _rows(
        2000 if quick else 5000, 40 if quick else 100, 300 if quick else 2000, 3 if quick else 5
    )
