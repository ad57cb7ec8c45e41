"""The scanner: one inventory snapshot, one ledger pass, every rule over both in memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tessera.clock import Clock
from tessera.posture.finding import Finding
from tessera.posture.inventory import InventorySource, UsageSource
from tessera.posture.rules import PostureRule, all_rules
from tessera.posture.settings import PostureSettings

# progress(step, done, total): "inventory", "ledger", then one call per rule
Progress = Callable[[str, int, int], None]


@dataclass
class ScanResult:
    started: datetime
    finished: datetime
    findings: list[Finding]
    identities: int = 0
    records: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # per phase and per rule
    errors: dict[str, str] = field(default_factory=dict)  # rule id -> error (rule skipped)

    def stats(self) -> dict[str, Any]:
        return {
            "identities": self.identities,
            "records": self.records,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "errors": self.errors,
        }


class PostureScanner:
    def __init__(
        self,
        inventory: InventorySource,
        usage: UsageSource,
        clock: Clock,
        settings: PostureSettings | None = None,
        rules: Sequence[PostureRule] | None = None,
        refresh: Callable[[PostureSettings], PostureSettings] | None = None,
    ) -> None:
        self._inventory = inventory
        self._usage = usage
        self._clock = clock
        self.settings = settings or PostureSettings()
        self.rules = list(rules) if rules is not None else all_rules()
        # Settings that follow other state (the active bundle's scope types), per scan.
        self._refresh = refresh

    def scan(self, progress: Progress | None = None) -> ScanResult:
        """Run every rule once over one snapshot and one ledger pass. A rule that fails is
        reported in ``errors`` and skipped; the others still run (a broken rule must not
        hide every other finding)."""
        cfg = self._refresh(self.settings) if self._refresh else self.settings
        now = self._clock.now()
        total = len(self.rules) + 2
        result = ScanResult(now, now, [])
        tick = time.perf_counter()
        inv = self._inventory.snapshot(now)
        result.seconds["inventory"] = time.perf_counter() - tick
        result.identities = len(inv.agents) + len(inv.users) + len(inv.operators)
        if progress:
            progress("inventory", 1, total)
        tick = time.perf_counter()
        usage = self._usage.summary(now - timedelta(days=cfg.window_days), now)
        result.seconds["ledger"] = time.perf_counter() - tick
        result.records = usage.records
        if progress:
            progress("ledger", 2, total)
        seen: set[str] = set()
        for i, rule in enumerate(self.rules, start=3):
            tick = time.perf_counter()
            try:
                for finding in rule.evaluate(inv, usage, cfg):
                    if finding.key not in seen:
                        seen.add(finding.key)
                        result.findings.append(finding)
            except Exception as exc:  # report and go on with the other rules
                result.errors[rule.id] = f"{type(exc).__name__}: {exc}"[:300]
            result.seconds[rule.id] = time.perf_counter() - tick
            if progress:
                progress(rule.id, i, total)
        result.findings.sort(key=lambda f: (-f.severity.rank, f.rule, f.subject))
        result.finished = self._clock.now()
        return result
