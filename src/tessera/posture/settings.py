"""Posture policy: the thresholds the rules compare against (``TESSERA_POSTURE_*``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tessera.identity.ceiling import DEFAULT_DELEGATION_DEPTH, MAX_SESSION_LIFETIME


@dataclass(frozen=True)
class PostureSettings:
    dormant_days: int = 30  # an agent with no session for this long is dormant
    usage_window_days: int = 30  # the audit window over-privilege looks at
    key_rotation_days: int = 90  # keys older than this are due for rotation
    max_agent_lifetime_days: int = 365  # TESSERA_AGENT_MAX_LIFETIME_DAYS
    max_session_lifetime: int = MAX_SESSION_LIFETIME  # seconds
    max_delegation_depth: int = DEFAULT_DELEGATION_DEPTH
    # resource type -> data scope type, as the active policy bundle maps them (DESIGN 6b)
    scope_types: Mapping[str, str] = field(default_factory=dict)

    @property
    def window_days(self) -> int:
        """How far back the one ledger pass reads."""
        return max(self.dormant_days, self.usage_window_days)
