"""Policy bundles: a directory of Cedar policies, a Cedar schema, an OpenFGA model, the
action → relation mapping and tool marks, and test cases.

Layout (every path relative to the bundle directory)::

    bundle.yaml            name, actions, tools, taint, risk (below)
    *.cedar                Cedar policies (any number of files)
    schema.cedarschema     Cedar schema; every policy is validated against it
    *.fga                  optional OpenFGA model (DSL 1.1) the bundle pins: it must be
                           the ReBAC service's active model (decisions.md 85)
    tests/*.yaml           optional test cases (``tessera policy test``)

``bundle.yaml``::

    name: docs
    actions:                      # DESIGN 6b: an action not listed here is denied
      docs/read: {relation: viewer}           # ReBAC relation checked on the resource
      docs/publish: {relation: editor, sensitive: true}
      can_read_todos: {relation: null}        # Cedar only, no ReBAC check
    tools:
      web/fetch: {untrusted_input: true}      # taints the session
      mail/send: {egress: true}               # refused (or approval) once tainted
    taint: deny                   # deny | approval_required
    scope_types: {document: doc}  # resource document:7 is data scope doc:7 (default: same)
    risk: {approval_at: 50, deny_at: 80}      # risk rules; they only tighten
    approvals: {rules: [...], groups: {...}}  # human approval (policy/approval_rules.py)

A bundle is stored as the mapping of these file names to their text, so validating a
directory and loading a stored version are the same code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from tessera.policy.approval_rules import ApprovalPolicy, parse_approval_policy
from tessera.policy.cedar import CedarPolicies, PolicyError, validate_cedar
from tessera.rebac import AuthorizationModel, ModelError, parse_dsl
from tessera.rebac.jsonmodel import model_digest

MANIFEST: Final = "bundle.yaml"
SCHEMA: Final = "schema.cedarschema"
MAX_FILES: Final = 2000
MAX_BYTES: Final = 8 * 1024 * 1024
_TAINT = ("deny", "approval_required")


class BundleError(PolicyError):
    """A bundle that does not validate; ``problems`` lists every issue found."""

    code = "policy_bundle_invalid"
    title = "Invalid policy bundle"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems)[:500] or "invalid bundle")
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ActionRule:
    relation: str | None
    sensitive: bool = False


@dataclass(frozen=True, slots=True)
class ToolMarks:
    untrusted_input: bool = False
    egress: bool = False


@dataclass(frozen=True)
class PolicyBundle:
    name: str
    files: Mapping[str, str] = field(repr=False)
    actions: Mapping[str, ActionRule]
    tools: Mapping[str, ToolMarks]
    taint: str
    scope_types: Mapping[str, str]
    approval_at: int
    deny_at: int
    cedar: CedarPolicies = field(repr=False)
    rebac_model: AuthorizationModel | None = field(repr=False)
    rebac_model_text: str | None = field(repr=False)
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)  # issue 8
    # decisions.md 85: the pinned model's digest (``rebac.jsonmodel.model_digest``); relations
    # are evaluated only while the ReBAC service's active model has the same digest.
    rebac_model_digest: str | None = None

    @property
    def digest(self) -> str:
        return bundle_digest(self.files)

    def test_files(self) -> dict[str, str]:
        return {k: v for k, v in self.files.items() if k.startswith("tests/")}


def bundle_digest(files: Mapping[str, str]) -> str:
    data = json.dumps(dict(sorted(files.items())), separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_bundle_dir(path: Path) -> dict[str, str]:
    """The bundle's files (manifest, policies, schema, model, tests) as text."""
    if not path.is_dir():
        raise BundleError([f"{path} is not a directory"])
    files: dict[str, str] = {}
    total = 0
    for p in sorted(path.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(path).as_posix()
        wanted = (
            rel in (MANIFEST, SCHEMA)
            or (p.suffix in (".cedar", ".fga") and "/" not in rel)
            or (rel.startswith("tests/") and p.suffix in (".yaml", ".yml"))
        )
        if not wanted:
            continue
        text = p.read_text(encoding="utf-8")
        total += len(text)
        files[rel] = text
        if len(files) > MAX_FILES or total > MAX_BYTES:
            raise BundleError([f"a bundle is limited to {MAX_FILES} files and {MAX_BYTES} bytes"])
    return files


def _flag(value: Any, what: str, problems: list[str]) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        problems.append(f"{MANIFEST}: {what} must be true or false")
        return False
    return value


def _manifest(text: str | None, problems: list[str]) -> dict[str, Any]:
    if text is None:
        problems.append(f"{MANIFEST} is missing")
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problems.append(f"{MANIFEST}: {str(exc)[:200]}")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{MANIFEST} must be a mapping")
        return {}
    unknown = set(data) - {
        "name",
        "actions",
        "tools",
        "taint",
        "risk",
        "description",
        "scope_types",
        "approvals",
    }
    if unknown:
        problems.append(f"{MANIFEST}: unknown keys {sorted(unknown)}")
    return data


def _actions(
    raw: Any, model: AuthorizationModel | None, problems: list[str]
) -> dict[str, ActionRule]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{MANIFEST}: actions must map each action to {{relation: ...}}")
        return {}
    out: dict[str, ActionRule] = {}
    for name, rule in raw.items():
        if not isinstance(rule, dict) or "relation" not in rule:
            problems.append(f"{MANIFEST}: action {name!r} needs relation (a name or null)")
            continue
        rel = rule["relation"]
        if rel is not None and not isinstance(rel, str):
            problems.append(f"{MANIFEST}: action {name!r}: relation must be a string or null")
            continue
        if rel is not None and model is None:
            problems.append(
                f"{MANIFEST}: action {name!r} names a relation but there is no .fga model"
            )
        elif (
            rel is not None
            and model is not None
            and not any(rel in td.relations for td in model.types.values())
        ):
            problems.append(f"{MANIFEST}: action {name!r}: relation {rel!r} is not in the model")
        out[str(name)] = ActionRule(
            rel, _flag(rule.get("sensitive"), f"{name}.sensitive", problems)
        )
    return out


def _tools(raw: Any, problems: list[str]) -> dict[str, ToolMarks]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{MANIFEST}: tools must be a mapping")
        return {}
    out = {}
    for name, marks in raw.items():
        m = marks if isinstance(marks, dict) else {}
        out[str(name)] = ToolMarks(
            _flag(m.get("untrusted_input"), f"{name}.untrusted_input", problems),
            _flag(m.get("egress"), f"{name}.egress", problems),
        )
    return out


def load_bundle(files: Mapping[str, str]) -> PolicyBundle:
    """Parse and validate every part of a bundle; raises ``BundleError`` with all problems."""
    problems: list[str] = []
    manifest = _manifest(files.get(MANIFEST), problems)
    name = manifest.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{MANIFEST}: name is required")
    schema = files.get(SCHEMA)
    if schema is None:
        problems.append(f"{SCHEMA} is missing")
    policies = {k: v for k, v in files.items() if k.endswith(".cedar")}
    if not policies:
        problems.append("no *.cedar policy file")
    if schema is not None and policies:
        problems.extend(validate_cedar(policies, schema))
    models = {k: v for k, v in files.items() if k.endswith(".fga")}
    model: AuthorizationModel | None = None
    model_text: str | None = None
    if len(models) > 1:
        problems.append("a bundle pins one ReBAC model: more than one .fga file")
    elif models:
        ((mname, model_text),) = models.items()
        try:
            model = parse_dsl(model_text)
        except ModelError as exc:
            problems.extend(
                f"{mname}:{i.line + 1}:{i.column + 1}: {i.kind}: {i.message}" for i in exc.issues
            )
    actions = _actions(manifest.get("actions"), model, problems)
    tools = _tools(manifest.get("tools"), problems)
    taint = manifest.get("taint", "deny")
    if taint not in _TAINT:
        problems.append(f"{MANIFEST}: taint must be one of {list(_TAINT)}")
    scope_types = manifest.get("scope_types") or {}
    if not isinstance(scope_types, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in scope_types.items()
    ):
        problems.append(f"{MANIFEST}: scope_types must map resource types to data scope types")
        scope_types = {}
    risk = manifest.get("risk") or {}
    approval_at, deny_at = risk.get("approval_at", 50), risk.get("deny_at", 80)
    if not all(isinstance(v, int) and 0 <= v <= 101 for v in (approval_at, deny_at)):
        problems.append(f"{MANIFEST}: risk thresholds must be integers from 0 to 101")
    approvals = parse_approval_policy(manifest.get("approvals"), problems)
    cedar: CedarPolicies | None = None
    if not problems:
        try:
            cedar = CedarPolicies(policies, leaf_actions=actions)
        except PolicyError as exc:
            problems.append(exc.message)
    if problems or cedar is None:
        raise BundleError(problems)
    return PolicyBundle(
        name=str(name),
        files=dict(files),
        actions=actions,
        tools=tools,
        taint=str(taint),
        scope_types=dict(scope_types),
        approval_at=int(approval_at),
        deny_at=int(deny_at),
        cedar=cedar,
        rebac_model=model,
        rebac_model_text=model_text,
        approvals=approvals,
        rebac_model_digest=None if model is None else model_digest(model),
    )
