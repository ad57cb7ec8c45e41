"""The public surface of tessera.rebac is what __all__ says."""

from __future__ import annotations

import tessera.rebac as rebac


def test_all_is_exact_and_importable() -> None:
    public = {n for n in dir(rebac) if not n.startswith("_")}
    modules = {
        "conditions",
        "dsl",
        "dslexpr",
        "engine",
        "errors",
        "expand",
        "jsonmodel",
        "memory",
        "model",
        "modules",
        "ports",
        "render",
        "resolve",
        "service",  # RebacService: the store-backed layer, imported by app.py, not re-exported
        "storage",
        "testfile",
        "validate",
    }
    assert set(rebac.__all__) == public - modules
    for name in rebac.__all__:
        assert getattr(rebac, name) is not None
