"""Hot-path correlation ids (tessera/ids.py): the format of ``secrets.token_hex``, unique."""

from __future__ import annotations

import os
import re

from tessera import ids
from tessera.ids import unique_hex


def test_ids_have_the_token_hex_format_and_do_not_repeat() -> None:
    seen = {unique_hex(10) for _ in range(20_000)}
    assert len(seen) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{20}", s) for s in seen)
    assert re.fullmatch(r"[0-9a-f]{16}", unique_hex(8))


def test_consecutive_ids_share_no_visible_structure() -> None:
    a, b = unique_hex(10), unique_hex(10)
    assert sum(x == y for x, y in zip(a, b, strict=True)) < 10  # not a visible counter


def test_a_forked_child_draws_its_own_key() -> None:
    before = ids._State.key
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ids._State.key)
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64)
    os.close(read)
    os.close(write)
    assert child != before
    assert ids._State.key == before


def test_is_id_knows_the_shape_of_each_kind() -> None:
    uid = ids.new_id("user")
    assert ids.is_id("user", uid)
    assert not ids.is_id("agent", uid)
    assert not ids.is_id("user", "alice")
    assert not ids.is_id("user", uid + "x")
    assert not ids.is_id("user", uid.replace(uid[-1], "i"))  # not Crockford base32
