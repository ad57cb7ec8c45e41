"""Revocation across nodes (issue 7): three ``tessera serve`` processes share one
PostgreSQL; revocations go through node A; nodes B and C must deny *because of the
revocation* (reason ``invalid_token``, never ``stale_state``) within a generous deadline.
The PDP's liveness cache keeps answers for a minute, so only the event log can bring the
revocation to B and C in time. Again with notifications disabled (the poll alone), and a
negative control with tailing disabled on B and C, where the same probe must fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import require_postgres
from tests.e2e.cluster import Cluster

ROUNDS = 10  # DESIGN 10: about ten revocations per multi-node test

pytestmark = pytest.mark.postgres


def _database_url(pg_schema_url: tuple[str, str]) -> str:
    require_postgres()
    url, schema = pg_schema_url
    return f"{url}?options=-csearch_path%3D{schema}"


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def cluster_factory(tmp_path: Path, pg_schema_url: tuple[str, str]) -> Iterator[ClusterFactory]:
    started: list[Cluster] = []

    def make(**kw: Any) -> Cluster:
        c = Cluster(tmp_path, _database_url(pg_schema_url), **kw)
        started.append(c)
        c.start()
        return c

    yield make
    for c in started:
        c.stop()


def _revoke_rounds(cluster: Cluster) -> list[str]:
    a, b, c = cluster.nodes
    done: list[str] = []
    kinds = cluster.revocations()
    for i in range(ROUNDS):
        kind, revoke, undo = kinds[i % len(kinds)]
        token, sid = cluster.session()
        for node in (b, c):
            cluster.wait_for(node, token, "allow")  # the liveness cache now holds "live"
        revoke(sid)
        for node in (a, b, c):
            cluster.wait_for(node, token, "revoked")
        undo()
        done.append(kind)
    return done


@pytest.mark.parametrize("notify", ["1", "0"], ids=["notifications", "poll-only"])
def test_a_revocation_through_one_node_is_denied_by_every_node(
    cluster_factory: ClusterFactory, notify: str
) -> None:
    cluster = cluster_factory(base_env={"TESSERA_EVENT_NOTIFY": notify})
    kinds = _revoke_rounds(cluster)
    assert len(kinds) == ROUNDS
    assert set(kinds) == {"session", "agent suspended", "model revoked", "operator suspended"}


def test_negative_control_a_node_that_does_not_tail_is_detected(
    cluster_factory: ClusterFactory,
) -> None:
    off = {"TESSERA_EVENT_TAILING": "0"}
    cluster = cluster_factory(node_env={"B": off, "C": off})
    a, b, c = cluster.nodes
    token, sid = cluster.session()
    cluster.wait_for(a, token, "allow")
    cluster.admin_post(f"/sessions/{sid}/revoke")
    cluster.wait_for(a, token, "revoked")
    for node in (b, c):
        # The probe the positive test relies on fails here: the node never learns of the
        # revocation; it fails closed with stale_state instead of serving old state.
        with pytest.raises(TimeoutError, match="'stale'"):
            cluster.wait_for(node, token, "revoked", deadline=3.0)
        assert cluster.ask(node, token) == "stale"
