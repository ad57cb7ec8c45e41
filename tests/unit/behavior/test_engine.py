"""The behaviour engine: features, explained scores, learning rules, levels and drift."""

from __future__ import annotations

from typing import Any

from tessera.behavior.baseline import Baseline
from tessera.behavior.drift import divergence
from tessera.behavior.engine import (
    BehaviourEngine,
    BehaviourSettings,
    DriftNotice,
    LevelChange,
    agent_state_dict,
    agent_state_from,
)
from tessera.behavior.generator import generate

T0 = 1_767_600_000.0  # a Monday, 08:00 UTC
SETTINGS = BehaviourSettings(warmup_calls=100, reference_calls=200, window=100, drift_every=25)
MIX = ["docs/read", "docs/read", "web/search", "docs/write"]


class Driver:
    """Feeds calls through score-then-observe, as the pipeline does."""

    def __init__(self, settings: BehaviourSettings = SETTINGS) -> None:
        self.e = BehaviourEngine(settings)
        self.ts = T0
        self.n = 0

    def call(
        self,
        tool: str,
        *,
        agent: str = "agt_a",
        session: str | None = None,
        gap: float = 30.0,
        volume: int = 4000,
        external: bool = False,
        digest: str = "sha256:m1",
        rid: str = "r1",
        allowed: bool = True,
    ) -> Any:
        self.ts += gap
        self.n += 1
        f = self.e.features(
            agent=agent,
            operator="op_1",
            model_digest=digest,
            session=session or f"ses_{self.n // 10}",
            tool=tool,
            rtype="document",
            resource_id=rid,
            volume=volume + (self.n % 7) * 300,
            external=external,
            ts=self.ts,
        )
        a = self.e.score(f)
        self.e.observe(f, a, allowed=allowed)
        self.e.check_drift_due()
        return a

    def warm(self, n: int = 300, mix: list[str] = MIX, **kw: Any) -> None:
        for i in range(n):
            self.call(mix[i % len(mix)], **kw)


def test_an_agent_warms_up_before_it_is_scored() -> None:
    d = Driver()
    first = d.call("shell/exec")
    assert first.basis == "none"
    assert first.reasons == ("warming_up",)
    assert first.score == 0
    d.warm(120)
    assert d.call("docs/read").basis == "agent"


def test_benign_calls_score_low_and_a_never_used_tool_is_named() -> None:
    d = Driver()
    d.warm()
    assert d.call("docs/read").level == "low"
    a = d.call("secrets/read")
    assert a.level == "medium"
    assert a.reasons[0] == "new_tool"
    assert dict(a.parts)["new_tool"] == 60.0


def test_a_burst_is_a_rate_spike() -> None:
    d = Driver()
    d.warm()
    scores = [d.call(MIX[i % 4], session="ses_burst", gap=0.2) for i in range(14)]
    assert scores[0].level == "low"
    assert scores[-1].level == "high"
    assert "rate_spike" in scores[-1].reasons


def test_a_large_send_right_after_external_content_is_flagged() -> None:
    d = Driver()
    d.warm()
    d.call("web/search", session="ses_x", external=True)
    a = d.call("docs/write", session="ses_x", volume=400_000)
    assert a.level in ("medium", "high")
    assert a.reasons[:2] == ("volume_spike", "after_external_content")
    # the same volume spike without external content scores less
    b = d.call("docs/write", session="ses_y", volume=400_000)
    assert b.score < a.score
    assert "after_external_content" not in b.reasons


def test_anomalous_or_denied_calls_are_not_learned() -> None:
    d = Driver()
    d.warm()
    base = d.e.agents["agt_a"].baseline
    n = base.n
    d.call("secrets/read")  # scores medium: quarantined
    d.call("docs/read", allowed=False)  # denied by the PDP
    assert base.n == n
    assert "secrets/read" not in base.tools
    d.call("docs/read")
    assert base.n == n + 1


def test_a_new_agent_is_scored_against_its_peer_group() -> None:
    d = Driver()
    d.warm(agent="agt_a")
    a = d.call("secrets/read", agent="agt_new")
    assert a.basis == "peer"
    assert "new_tool" in a.reasons
    assert d.call("docs/read", agent="agt_new").level == "low"


def test_session_levels_only_rise_and_high_is_sticky() -> None:
    d = Driver()
    d.warm()
    d.e.take_notices()
    d.call("web/search", session="ses_s", external=True)
    assert d.call("docs/write", session="ses_s", volume=30_000_000).level == "high"
    after = d.call("docs/read", session="ses_s")
    assert after.score >= 80
    assert "session_high_risk" in after.reasons
    changes = [n for n in d.e.take_notices() if isinstance(n, LevelChange)]
    sessions = [(c.previous, c.level) for c in changes if c.session == "ses_s"]
    assert sessions == [("low", "high")]
    assert [(c.previous, c.level) for c in changes if c.session is None] == [("low", "high")]


def test_slow_creep_is_drift_against_the_frozen_reference() -> None:
    d = Driver()
    d.warm(300)
    ref = d.e.agents["agt_a"].reference
    assert ref.frozen
    assert ref.n == 200
    d.e.take_notices()
    for i in range(300):  # docs/write creeps from 25% to 70% of calls
        share = 0.25 + 0.45 * i / 300
        d.call("docs/write" if (i * 0.618) % 1 < share else MIX[i % 2])
    drift = [n for n in d.e.take_notices() if isinstance(n, DriftNotice)]
    assert drift
    assert drift[0].kind == "agent"
    assert not drift[0].resolved
    assert drift[0].kl >= 0.1
    assert any("docs/write" in category for category, _, _ in drift[0].top)
    assert ref.tools == d.e.agents["agt_a"].reference.tools  # still frozen


def test_a_new_model_version_that_behaves_differently_is_model_drift() -> None:
    d = Driver()
    d.warm(300, digest="sha256:m1")
    d.e.take_notices()
    d.warm(200, mix=["web/search", "web/search", "docs/write"], digest="sha256:m2")
    kinds = {n.kind for n in d.e.take_notices() if isinstance(n, DriftNotice)}
    assert "model" in kinds


def test_the_same_behaviour_under_a_new_model_is_not_drift() -> None:
    d = Driver()
    d.warm(300, digest="sha256:m1")
    d.warm(300, digest="sha256:m2")
    assert not [n for n in d.e.take_notices() if isinstance(n, DriftNotice)]


def test_rebaseline_accepts_the_current_behaviour() -> None:
    d = Driver()
    d.warm(300)
    d.warm(150, mix=["web/search"])
    assert d.e.agents["agt_a"].drift_open
    assert d.e.rebaseline("agt_a", d.ts)
    assert not d.e.agents["agt_a"].drift_open
    assert d.e.agents["agt_a"].reference.tools.get("web/search", 0) >= 100


def test_state_round_trips_and_scores_the_same() -> None:
    d = Driver()
    d.warm()
    f = d.e.features(
        agent="agt_a",
        operator="op_1",
        model_digest="sha256:m1",
        session=None,
        tool="docs/write",
        rtype="document",
        resource_id="*",
        volume=90_000,
        external=False,
        ts=d.ts + 10,
    )
    before = d.e.score(f)
    other = BehaviourEngine(SETTINGS)
    other.load_agent(agent_state_dict(d.e.agents["agt_a"]))
    assert other.score(f) == before
    assert agent_state_from(agent_state_dict(d.e.agents["agt_a"]), 100).baseline == (
        d.e.agents["agt_a"].baseline
    )
    assert Baseline.from_dict(d.e.agents["agt_a"].baseline.to_dict()).n == 300


def test_kl_divergence_is_zero_for_the_same_distribution_and_names_the_change() -> None:
    same = divergence({"a": 500, "b": 500}, {"a": 5000, "b": 5000})
    assert same.kl == 0.0
    moved = divergence({"a": 100, "b": 900}, {"a": 900, "b": 100})
    assert moved.kl > 1.0
    assert moved.top[0][0] == "b"
    assert divergence({}, {"a": 1}).kl == 0.0


def test_generator_is_deterministic_and_follows_its_spec() -> None:
    w = generate(3, 0.1)
    assert w.events == generate(3, 0.1).events
    assert w.events != generate(4, 0.1).events
    kinds = [a.kind for a in w.attacks]
    assert {k: kinds.count(k) for k in set(kinds)} == {"exfiltration": 5, "new_tool": 5, "burst": 5}
    assert all(e.ts >= w.warmup_end for e in w.events if e.label is not None)
    assert [e.ts for e in w.events] == sorted(e.ts for e in w.events)
    assert len({e.agent for e in w.events}) == 20
    assert {s.kind for s in w.scenarios} == {"creep", "model_shift", "upgrade"}


def test_the_public_surface_is_what_all_says() -> None:
    import types

    import tessera.behavior as pkg

    public = {
        n
        for n, v in vars(pkg).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public == set(pkg.__all__)
