"""Findings: what a posture rule saw, how bad it is, the evidence and the fix.

A finding is a value (CONVENTIONS: findings are values, not exceptions). Its ``key`` is
stable across scans (rule + subject), so the store can keep first-seen / last-seen and the
scheduler does not raise the same finding twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class Remediation(StrEnum):
    SUSPEND = "suspend"  # suspend the agent (sessions are revoked by the cascade)
    REVOKE_SESSION = "revoke_session"  # revoke a session and its delegation subtree
    NARROW_CEILING = "narrow_ceiling"  # replace the ceiling by the suggested narrower one
    DISABLE_CREDENTIAL = "disable_credential"
    REVIEW = "review"  # needs a person: nothing is changed automatically


class SubjectKind(StrEnum):
    AGENT = "agent"
    CREDENTIAL = "credential"
    SESSION = "session"
    CLIENT = "client"  # a client id Tessera does not know (shadow agent)


@dataclass(frozen=True)
class Finding:
    """One problem found by one rule about one subject."""

    rule: str
    severity: Severity
    subject_kind: SubjectKind
    subject: str
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    remediation: Remediation = Remediation.REVIEW
    # What the remediation needs: {"ceiling": {...}} for narrow_ceiling, {"agent": id} ...
    remediation_args: Mapping[str, Any] = field(default_factory=dict)
    agent: str | None = None  # the agent concerned, when there is one (for filtering)

    @cached_property
    def key(self) -> str:
        raw = f"{self.rule}\x00{self.subject_kind.value}\x00{self.subject}".encode()
        return hashlib.sha256(raw).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rule": self.rule,
            "severity": self.severity.value,
            "subject_kind": self.subject_kind.value,
            "subject": self.subject,
            "agent": self.agent,
            "summary": self.summary,
            "evidence": dict(self.evidence),
            "remediation": self.remediation.value,
            "remediation_args": dict(self.remediation_args),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            rule=str(data["rule"]),
            severity=Severity(data["severity"]),
            subject_kind=SubjectKind(data["subject_kind"]),
            subject=str(data["subject"]),
            summary=str(data["summary"]),
            evidence=dict(data.get("evidence") or {}),
            remediation=Remediation(data.get("remediation", "review")),
            remediation_args=dict(data.get("remediation_args") or {}),
            agent=data.get("agent"),
        )
