"""The posture tests' store: a real SQLite Tessera (``sqlite_tessera``) with the base
inventory of ``helpers.base`` (operator, users, model)."""

from __future__ import annotations

import pytest
from tests.unit.posture.helpers import base

from tessera.app import Tessera


@pytest.fixture
def t(sqlite_tessera: Tessera) -> Tessera:
    base(sqlite_tessera)
    return sqlite_tessera
