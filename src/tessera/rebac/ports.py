"""What the relationship engine needs from storage: a narrow read interface.

Strings follow OpenFGA: an object is ``type:id``; a user is ``type:id``, a wildcard
``type:*`` or a userset ``type:id#relation``. The engine reads tuples only through
``TupleReader``; ``MemoryTupleIndex`` (memory.py) is the production implementation, kept
fresh from the store's change sequence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tessera.clock import utc
from tessera.rebac.errors import InvalidTuple


@dataclass(frozen=True, slots=True)
class TupleMeta:
    """What a tuple carries beyond its key. Unconditional, non-expiring tuples store
    ``None`` instead of a TupleMeta, which keeps the index small."""

    condition: str | None = None
    context: Mapping[str, Any] | None = None
    expires_at: float | None = None  # POSIX seconds; the tuple is invisible from then on


@dataclass(frozen=True, slots=True)
class RelationTuple:
    """A relationship tuple. Identity is (object, relation, user); writing the same key
    again replaces its condition and expiry."""

    object: str
    relation: str
    user: str
    condition: str | None = None
    context: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    expires_at: datetime | None = None  # Tessera extension; must be timezone-aware

    def __post_init__(self) -> None:
        for part in (self.object, self.relation, self.user):
            if not isinstance(part, str) or not part:
                raise InvalidTuple("tuple fields must be non-empty strings")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise InvalidTuple("expires_at must be timezone-aware")

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.object, self.relation, self.user)

    def meta(self) -> TupleMeta | None:
        if self.condition is None and self.expires_at is None:
            return None
        exp = None if self.expires_at is None else utc(self.expires_at).timestamp()
        return TupleMeta(self.condition, dict(self.context) if self.context else None, exp)


EMPTY: Mapping[str, TupleMeta | None] = {}

_OBJECT_ID = re.compile(r"[\w|@.+/\-][\w|*@.+/\-]*")


def is_valid_object_id(object_id: str) -> bool:
    """OpenFGA object ids: letters, digits and ``_ | * @ . + / -``; never ``#``, ``:``
    or whitespace, and not starting with ``*`` (a lone ``*`` is the wildcard user)."""
    return _OBJECT_ID.fullmatch(object_id) is not None


class TupleReader(Protocol):
    """The reads the engine makes. Returned mappings are read-only views: callers never
    mutate them. Expired tuples may be returned; the engine filters them by its clock."""

    def users(self, obj: str, relation: str) -> Mapping[str, TupleMeta | None]:
        """Concrete users and wildcards (``type:id``, ``type:*``) related to ``obj``."""
        ...

    def usersets(self, obj: str, relation: str) -> Mapping[str, TupleMeta | None]:
        """Userset users (``type:id#relation``) related to ``obj``."""
        ...

    def objects_of_type(self, object_type: str) -> Iterable[str]:
        """Every object of ``object_type`` that is the object of at least one tuple."""
        ...

    def users_of_type(self, user_type: str) -> Iterable[str]:
        """Every ``type:id`` of ``user_type`` that appears as a tuple's user (the object
        part of a userset counts)."""
        ...

    def keys_of_user(self, user: str) -> Iterable[str]:
        """``object#relation`` of every tuple whose user is exactly ``user`` (a concrete
        user, a wildcard, a userset, or an object used as a parent)."""
        ...
