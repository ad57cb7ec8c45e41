"""Identity posture: rules over the inventory and the audit ledger, the scanner,
remediation, and access reviews (issue 11). See docs/posture.md."""

from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.rules import PostureRule, all_rules
from tessera.posture.scanner import PostureScanner, ScanResult
from tessera.posture.settings import PostureSettings

__all__ = [
    "Finding",
    "PostureRule",
    "PostureScanner",
    "PostureSettings",
    "Remediation",
    "ScanResult",
    "Severity",
    "SubjectKind",
    "all_rules",
]
