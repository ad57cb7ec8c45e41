"""The posture report for people: one self-contained HTML page (inline CSS, no script, no
external resource), every value escaped, so a hostile agent name or evidence string cannot
inject markup into the page an administrator opens."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from html import escape
from typing import Any

from tessera.clock import iso
from tessera.posture.finding import Finding, Severity
from tessera.posture.remediation import Action
from tessera.posture.scanner import ScanResult

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1d2433}
h1{font-size:1.5rem;margin:0 0 .3rem}p.meta{color:#5b6476;margin:0 0 1.2rem}
.cards{display:flex;gap:.8rem;margin:0 0 1.5rem}
.card{border-radius:8px;padding:.6rem 1rem;min-width:6rem;background:#f3f5f9}
.card b{display:block;font-size:1.4rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;
padding:.45rem .6rem;border-bottom:1px solid #e3e7ee}th{background:#f7f8fb}
.sev{font-weight:600;border-radius:4px;padding:.1rem .45rem;font-size:.8rem}
.critical{background:#7a0019;color:#fff}.high{background:#d93f0b;color:#fff}
.medium{background:#f5c542}.low{background:#cfe3ff}
pre{margin:0;white-space:pre-wrap;word-break:break-word;font-size:.78rem;color:#39414f}
code{font-size:.82rem}
"""


def _sev(value: str) -> str:
    return f'<span class="sev {escape(value)}">{escape(value)}</span>'


def render_html(
    result: ScanResult, findings: Sequence[Finding], actions: Sequence[Action] = ()
) -> str:
    """The whole report as one HTML document."""
    counts = Counter(f.severity.value for f in findings)
    cards = "".join(
        f'<div class="card">{_sev(s.value)}<b>{counts.get(s.value, 0)}</b></div>'
        for s in sorted(Severity, key=lambda s: -s.rank)
    )
    planned = {a.finding_key: a.describe() for a in actions}
    rows = []
    for f in findings:
        evidence = json.dumps(dict(f.evidence), indent=1, sort_keys=True, default=str)
        fix = planned.get(f.key, f.remediation.value)
        rows.append(
            "<tr>"
            f"<td>{_sev(f.severity.value)}</td>"
            f"<td><code>{escape(f.rule)}</code></td>"
            f"<td>{escape(f.subject_kind.value)}<br><code>{escape(f.subject)}</code></td>"
            f"<td>{escape(f.summary)}<pre>{escape(evidence)}</pre></td>"
            f"<td>{escape(fix)}</td>"
            "</tr>"
        )
    body = "".join(rows) or '<tr><td colspan="5">No findings.</td></tr>'
    stats: dict[str, Any] = result.stats()
    meta = (
        f"Scanned {iso(result.started)} · {stats['identities']} identities · "
        f"{stats['records']} audit records · "
        f"{(result.finished - result.started).total_seconds():.2f} s"
    )
    errors = "".join(
        f"<li><code>{escape(k)}</code>: {escape(v)}</li>" for k, v in sorted(result.errors.items())
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\';'
        " style-src 'unsafe-inline'\">"
        "<title>Tessera posture report</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Tessera posture report</h1>"
        f'<p class="meta">{escape(meta)}</p>'
        f'<div class="cards">{cards}</div>'
        + (
            f"<p>Rules that failed (their findings are missing):</p><ul>{errors}</ul>"
            if errors
            else ""
        )
        + "<table><thead><tr><th>severity</th><th>rule</th><th>subject</th>"
        "<th>finding and evidence</th><th>remediation</th></tr></thead>"
        f"<tbody>{body}</tbody></table></body></html>\n"
    )
