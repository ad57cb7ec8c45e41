"""When a call needs a human (issue 8): the ``approvals`` section of ``bundle.yaml`` and the
``@approval`` Cedar annotation.

Two ways to require approval, both part of the reviewed, versioned policy bundle:

* a rule in ``bundle.yaml``::

      approvals:
        expiry: 300                     # seconds a request waits (default 300, at most 3600)
        redact: [iban]                  # argument keys shown as "[redacted]" (added to defaults)
        groups:
          finance-approvers:
            members: [bob, carol]       # usernames
            webhook: https://hooks.example/approvals   # optional notification (outbound rules)
        fatigue: {max_per_approver: 20, window: 600, auto_deny_after: 3}
        rules:
          - actions: [finance/transfer]   # tool patterns: server/tool or server/*
            approvers: 2                  # dual control: N distinct people
            group: finance-approvers      # else the user the agent acts for, else its owner
            passkey: true                 # default true: only a WebAuthn assertion counts
            high_risk_approvers: 2        # when the behaviour engine reports high risk

* a Cedar annotation on a ``permit`` policy: ``@approval("1")`` (or ``"2"``...). When such a
  permit decides the request, the call needs that many approvers (passkey required, default
  approver). The first matching bundle rule wins over annotations when both apply; the
  larger count is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

DEFAULT_EXPIRY: Final = 300
MAX_EXPIRY: Final = 3600
MAX_APPROVERS: Final = 5
DEFAULT_REDACT: Final = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "authorization",
        "cookie",
        "private_key",
        "client_secret",
    }
)


@dataclass(frozen=True, slots=True)
class ApproverGroup:
    name: str
    members: tuple[str, ...]  # usernames
    webhook: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    actions: tuple[str, ...]
    approvers: int = 1
    group: str | None = None
    passkey: bool = True
    high_risk_approvers: int | None = None

    def matches(self, action: str) -> bool:
        for pattern in self.actions:
            if pattern == action or pattern == "*":
                return True
            if pattern.endswith("/*") and action.startswith(pattern[:-1]):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Fatigue:
    max_per_approver: int = 20  # new requests routed to one approver per window
    window: int = 600  # seconds
    auto_deny_after: int = 3  # denials of (agent, action) within the window


@dataclass(frozen=True, slots=True)
class Requirement:
    """What one call needs: N distinct approvers, from a group or the default source."""

    approvers: int = 1
    group: str | None = None
    passkey: bool = True
    source: str = "default"  # rule:<index> | policy:<id> | default


@dataclass(frozen=True)
class ApprovalPolicy:
    rules: tuple[ApprovalRule, ...] = ()
    groups: Mapping[str, ApproverGroup] = field(default_factory=dict)
    expiry: int = DEFAULT_EXPIRY
    fatigue: Fatigue = Fatigue()
    redact: frozenset[str] = DEFAULT_REDACT

    def rule_for(self, action: str) -> tuple[int, ApprovalRule] | None:
        for i, rule in enumerate(self.rules):
            if rule.matches(action):
                return i, rule
        return None

    def requirement(
        self,
        action: str,
        *,
        annotated: Sequence[tuple[str, int]] = (),
        risk_level: str | None = None,
    ) -> Requirement | None:
        """The requirement for ``action``, or None when nothing asks for approval.
        ``annotated``: (policy id, approvers) of deciding permits with ``@approval``."""
        found = self.rule_for(action)
        best: Requirement | None = None
        if found is not None:
            i, rule = found
            n = rule.approvers
            if risk_level == "high" and rule.high_risk_approvers:
                n = max(n, rule.high_risk_approvers)
            best = Requirement(n, rule.group, rule.passkey, f"rule:{i}")
        for pid, n in annotated:
            if best is None:
                best = Requirement(n, None, True, f"policy:{pid}")
            elif n > best.approvers:
                best = Requirement(n, best.group, True, best.source)
        return best


def annotation_approvers(value: str | None) -> int | None:
    """``@approval("required")`` is 1; ``@approval("2")`` is 2; anything else is None."""
    if value is None:
        return None
    if value.strip().lower() in ("required", "true", "yes"):
        return 1
    if value.strip().isdigit() and 1 <= int(value) <= MAX_APPROVERS:
        return int(value)
    return None


def _int(raw: Any, what: str, low: int, high: int, default: int, problems: list[str]) -> int:
    if raw is None:
        return default
    if not isinstance(raw, int) or isinstance(raw, bool) or not low <= raw <= high:
        problems.append(f"bundle.yaml: approvals.{what} must be an integer from {low} to {high}")
        return default
    return raw


def parse_approval_policy(raw: Any, problems: list[str]) -> ApprovalPolicy:
    """Validate the ``approvals`` section; every problem is appended to ``problems``."""
    if raw is None:
        return ApprovalPolicy()
    if not isinstance(raw, dict):
        problems.append("bundle.yaml: approvals must be a mapping")
        return ApprovalPolicy()
    unknown = set(raw) - {"rules", "groups", "expiry", "fatigue", "redact"}
    if unknown:
        problems.append(f"bundle.yaml: approvals: unknown keys {sorted(unknown)}")
    groups: dict[str, ApproverGroup] = {}
    for name, g in (raw.get("groups") or {}).items():
        members = g.get("members") if isinstance(g, dict) else None
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            problems.append(f"bundle.yaml: approvals.groups.{name}.members must list usernames")
            continue
        hook = g.get("webhook")
        if hook is not None and (
            not isinstance(hook, str) or not hook.startswith(("https://", "http://"))
        ):
            problems.append(f"bundle.yaml: approvals.groups.{name}.webhook must be a URL")
            hook = None
        groups[str(name)] = ApproverGroup(str(name), tuple(members), hook)
    rules: list[ApprovalRule] = []
    raw_rules = raw.get("rules") or []
    if not isinstance(raw_rules, list):
        problems.append("bundle.yaml: approvals.rules must be a list")
        raw_rules = []
    for i, r in enumerate(raw_rules):
        if not isinstance(r, dict):
            problems.append(f"bundle.yaml: approvals.rules[{i}] must be a mapping")
            continue
        actions = r.get("actions")
        if isinstance(actions, str):
            actions = [actions]
        if not isinstance(actions, list) or not actions:
            problems.append(f"bundle.yaml: approvals.rules[{i}].actions must list tools")
            continue
        group = r.get("group")
        if group is not None and group not in groups:
            problems.append(f"bundle.yaml: approvals.rules[{i}].group {group!r} is not defined")
        passkey = r.get("passkey", True)
        if not isinstance(passkey, bool):
            problems.append(f"bundle.yaml: approvals.rules[{i}].passkey must be true or false")
            passkey = True
        hr = r.get("high_risk_approvers")
        rules.append(
            ApprovalRule(
                tuple(str(a) for a in actions),
                _int(r.get("approvers"), f"rules[{i}].approvers", 1, MAX_APPROVERS, 1, problems),
                group,
                passkey,
                None
                if hr is None
                else _int(hr, f"rules[{i}].high_risk_approvers", 1, MAX_APPROVERS, 1, problems),
            )
        )
    f = raw.get("fatigue") or {}
    if not isinstance(f, dict):
        problems.append("bundle.yaml: approvals.fatigue must be a mapping")
        f = {}
    fatigue = Fatigue(
        _int(f.get("max_per_approver"), "fatigue.max_per_approver", 1, 10_000, 20, problems),
        _int(f.get("window"), "fatigue.window", 10, 86_400, 600, problems),
        _int(f.get("auto_deny_after"), "fatigue.auto_deny_after", 1, 1000, 3, problems),
    )
    redact = raw.get("redact") or []
    if not isinstance(redact, list) or not all(isinstance(k, str) for k in redact):
        problems.append("bundle.yaml: approvals.redact must list argument names")
        redact = []
    return ApprovalPolicy(
        tuple(rules),
        groups,
        _int(raw.get("expiry"), "expiry", 10, MAX_EXPIRY, DEFAULT_EXPIRY, problems),
        fatigue,
        DEFAULT_REDACT | {k.lower() for k in redact},
    )
