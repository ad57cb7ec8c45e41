"""Parser for the OpenFGA modelling language, schema 1.1.

Spec: https://openfga.dev/docs/configuration-language (model, schema 1.1, type,
relations, define, direct assignment ``[...]``, ``or``/``and``/``but not``, ``from``,
parentheses, ``condition name(p: type) { CEL }``, ``#`` comments).

The language is line oriented, so the parser is a line-by-line state machine with a small
recursive-descent parser for the right-hand side of ``define``. Errors carry 0-based line
and column (the convention of OpenFGA's own tooling) and a kind: ``syntax`` for
malformed text, the OpenFGA ``errorType`` names for semantic problems (see validate.py).
A file of a modular model (``module NAME``, ``extend type``) is read by ``parse_file``
with ``module_mode=True``; modules.py combines such files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tessera.rebac.dslexpr import NAME, ExprParser, ParseError, tokenize
from tessera.rebac.errors import ModelError, ModelIssue
from tessera.rebac.model import (
    NOWHERE,
    AuthorizationModel,
    Condition,
    ConditionParam,
    Pos,
    RelationDef,
    TypeDef,
)

_PARAM_TYPES = frozenset(
    {
        "int",
        "uint",
        "double",
        "bool",
        "string",
        "bytes",
        "duration",
        "timestamp",
        "ipaddress",
        "any",
        "list",
        "map",
    }
)
_SCHEMA_LIKE = re.compile(r"\d+\.\d+")


def _strip_comment(text: str) -> str:
    """Drop a ``#`` comment: ``#`` at line start or after whitespace (``group#member``
    keeps its ``#``)."""
    for i, ch in enumerate(text):
        if ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _indent(raw: str) -> int:
    return len(raw) - len(raw.lstrip(" \t"))


def _parse_params(text: str, line: int, col: int, cond: str) -> dict[str, ConditionParam]:
    params: dict[str, ConditionParam] = {}
    if not text.strip():
        raise ParseError(line, col, "a condition needs at least one parameter")
    offset = col
    for part in text.split(","):
        m = re.fullmatch(
            r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([a-z]+)(\s*<\s*([a-z]*)\s*>?)?\s*", part
        )
        if not m:
            raise ParseError(line, offset, f"malformed condition parameter {part.strip()!r}")
        name, tname, generic = m.group(1), m.group(2), m.group(4)
        if name in params:
            raise ParseError(
                line,
                offset + m.start(1),
                f"parameter {name!r} is already defined in the condition {cond!r}",
                offset + m.end(1),
            )
        if tname not in _PARAM_TYPES:
            raise ParseError(
                line, offset + m.start(2), f"unknown parameter type {tname!r}", offset + m.end(2)
            )
        if tname in ("list", "map"):
            if generic is None:
                at = offset + m.end(2)
                raise ParseError(line, at, f"parameter type {tname!r} needs '<type>'")
            if generic not in _PARAM_TYPES or generic in ("list", "map"):
                at = offset + m.start(4)
                raise ParseError(
                    line, at, f"unsupported generic type {generic!r}", at + len(generic)
                )
        elif generic is not None:
            raise ParseError(line, offset + m.start(3), f"{tname!r} takes no generic argument")
        params[name] = ConditionParam(name, tname, generic)
        offset += len(part) + 1
    return params


def parse_dsl(text: str, *, validate: bool = True) -> AuthorizationModel:
    """Parse (and by default validate) a schema 1.1 model. Raises ``ModelError``."""
    try:
        model, pending = _parse(text)
    except ParseError as exc:
        raise ModelError([exc.issue]) from None
    if validate:
        from tessera.rebac.validate import model_issues

        pending.extend(model_issues(model))
    if pending:
        raise ModelError(pending)
    return model


@dataclass
class ParsedFile:
    """One DSL file: a model, or a module of a modular model (``module`` set)."""

    model: AuthorizationModel
    issues: list[ModelIssue]
    module: str | None = None
    module_pos: Pos = NOWHERE
    extensions: list[TypeDef] = field(default_factory=list)


def _parse(text: str) -> tuple[AuthorizationModel, list[ModelIssue]]:
    parsed = parse_file(text, module_mode=False)
    return parsed.model, parsed.issues


def parse_file(text: str, *, module_mode: bool) -> ParsedFile:
    """Parse one file without semantic validation. In ``module_mode`` a ``module NAME``
    header and ``extend type`` blocks are accepted (a file with a ``model`` header then
    comes back with ``module=None``). Raises ``ParseError`` on malformed text."""
    lines = text.split("\n")
    issues: list[ModelIssue] = []
    n = len(lines)

    def next_meaningful(start: int) -> int:
        j = start
        while j < n and not _strip_comment(lines[j]).strip():
            j += 1
        return j

    i = next_meaningful(0)
    if i >= n:
        raise ParseError(0, 0, "expecting 'model'")
    first = _strip_comment(lines[i])
    words = first.split()
    if words[0] == "module":
        if len(words) == 1:
            raise ParseError(i, len(first), "expecting a module name")
        if not module_mode:
            # A module file parsed as a standalone model: OpenFGA reports this error.
            issues.append(ModelIssue("schema-version-required", "schema version required"))
            return ParsedFile(AuthorizationModel("1.1", {}), issues)
        mcol = first.index(words[1], first.index("module") + 6)
        if len(words) != 2 or not NAME.fullmatch(words[1]):
            raise ParseError(i, mcol, "expecting a module name")
        body = _parse_body(lines, i + 1, issues, module_mode=True)
        return ParsedFile(
            AuthorizationModel("1.2", body[0], body[1]),
            issues,
            words[1],
            Pos(i, mcol, mcol + len(words[1])),
            body[2],
        )
    if first.strip() != "model":
        col = _indent(first)
        raise ParseError(i, col, f"unexpected {words[0]!r}, expecting 'model'")
    i = next_meaningful(i + 1)
    if i >= n:
        raise ParseError(n - 1, 0, "expecting 'schema'")
    raw = _strip_comment(lines[i])
    col = _indent(raw)
    words = raw.split()
    if not words or words[0] != "schema" or col == 0 or len(words) != 2:
        raise ParseError(i, col, "expecting 'schema'", col + len(words[0]) if words else None)
    version = words[1]
    vcol = raw.index(version, col + 6)
    if version not in ("1.1", "1.2"):
        if _SCHEMA_LIKE.fullmatch(version):
            issues.append(
                ModelIssue(
                    "invalid-schema", f"invalid schema {version}", i, vcol, vcol + len(version)
                )
            )
        else:
            raise ParseError(i, vcol, "expecting a schema version", vcol + len(version))
    types, conditions, _ = _parse_body(lines, i + 1, issues, module_mode=False)
    model = AuthorizationModel(version if version == "1.2" else "1.1", types, conditions)
    return ParsedFile(model, issues)


def _parse_body(
    lines: list[str], i: int, issues: list[ModelIssue], *, module_mode: bool
) -> tuple[dict[str, TypeDef], dict[str, Condition], list[TypeDef]]:
    n = len(lines)
    types: dict[str, TypeDef] = {}
    conditions: dict[str, Condition] = {}
    extensions: list[TypeDef] = []
    duplicate_types: list[ModelIssue] = []
    current: TypeDef | None = None
    in_relations = False
    while i < n:
        raw = _strip_comment(lines[i])
        if not raw.strip():
            i += 1
            continue
        col = _indent(raw)
        words = raw.split()
        head = words[0]
        if head == "type" or (head == "extend" and len(words) >= 2 and words[1] == "type"):
            extend = head == "extend"
            if len(words) != (3 if extend else 2):
                raise ParseError(i, col, "expecting 'type NAME'")
            name = words[-1]
            ncol = raw.index(name, raw.index("type", col) + 4)
            if not NAME.fullmatch(name):
                raise ParseError(i, ncol, f"invalid type name {name!r}")
            if extend and not module_mode:
                raise ParseError(
                    i, ncol, "extend can only be used in a modular model", ncol + len(name)
                )
            current = TypeDef(name, {}, Pos(i, ncol, ncol + len(name)))
            if extend:
                if any(e.name == name for e in extensions):
                    issues.append(
                        ModelIssue(
                            "duplicated-error",
                            f"'{name}' is already extended in file.",
                            i,
                            ncol,
                            ncol + len(name),
                        )
                    )
                extensions.append(current)
            elif name in types:
                # OpenFGA reports a duplicate type at its first definition.
                fp = types[name].pos
                duplicate_types.append(
                    ModelIssue(
                        "duplicated-error",
                        f"the type `{name}` is a duplicate.",
                        fp.line,
                        fp.column,
                        fp.end,
                    )
                )
            else:
                types[name] = current
            in_relations = False
            i += 1
            continue
        if head == "condition" or head.startswith("condition("):
            i = _parse_condition(lines, i, conditions)
            current = None
            continue
        if col == 0:
            raise ParseError(i, 0, f"unexpected {head!r}", len(head))
        if current is None:
            raise ParseError(i, col, f"unexpected {head!r}", col + len(head))
        if not in_relations:
            if head != "relations" or len(words) != 1:
                raise ParseError(
                    i, col, f"unexpected {head!r}, expecting 'relations'", col + len(head)
                )
            in_relations = True
            i += 1
            continue
        if head != "define":
            raise ParseError(i, col, f"unexpected {head!r}, expecting 'define'", col + len(head))
        _parse_define(raw, i, col, current, issues)
        i += 1
    issues[:0] = duplicate_types
    return types, conditions, extensions


def _parse_define(
    raw: str, line: int, col: int, current: TypeDef, issues: list[ModelIssue]
) -> None:
    j = col + len("define")
    if j >= len(raw) or raw[j] not in " \t":
        raise ParseError(line, col, "expecting 'define NAME:'", j)
    while j < len(raw) and raw[j] in " \t":
        j += 1
    m = NAME.match(raw, j)
    if not m:
        raise ParseError(line, j, "expecting a relation name")
    rname = m.group(0)
    rpos = Pos(line, j, m.end())
    k = m.end()
    while k < len(raw) and raw[k] in " \t":
        k += 1
    if k >= len(raw) or raw[k] != ":":
        word = NAME.match(raw, k)
        raise ParseError(line, k, "missing ':'", word.end() if word else k + 1)
    parser = ExprParser(tokenize(raw, line, k + 1), line, len(raw))
    rewrite = parser.parse()
    restrictions = tuple(parser.restrictions or ())
    if rname in current.relations:
        issues.append(
            ModelIssue(
                "duplicated-error",
                f"'{rname}' is already defined in '{current.name}'",
                line,
                rpos.column,
                rpos.end,
            )
        )
        return
    current.relations[rname] = RelationDef(rname, rewrite, restrictions, rpos)


def _parse_condition(lines: list[str], i: int, conditions: dict[str, Condition]) -> int:
    raw = lines[i]
    m = re.match(r"\s*condition\s+([A-Za-z0-9_\-./]+)\s*\(", raw)
    if not m:
        raise ParseError(i, 0, "expecting 'condition NAME(params) {'", len("condition"))
    name = m.group(1)
    npos = Pos(i, m.start(1), m.end(1))
    close = raw.find(")", m.end())
    if close < 0:
        raise ParseError(i, len(raw), "expecting ')'")
    params = _parse_params(raw[m.end() : close], i, m.end(), name)
    rest = raw[close + 1 :]
    brace = rest.find("{")
    if brace < 0 or rest[:brace].strip():
        raise ParseError(i, close + 1, "expecting '{'")
    # Collect the body up to the matching brace, possibly over several lines.
    body_parts: list[str] = []
    depth = 1
    segment = rest[brace + 1 :]
    j = i
    quote = ""  # inside a CEL string literal, braces do not count
    while True:
        for idx, ch in enumerate(segment):
            if quote:
                if ch == quote and segment[idx - 1 : idx] != "\\":
                    quote = ""
                continue
            if ch in "\"'":
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    body_parts.append(segment[:idx])
                    if _strip_comment(segment[idx + 1 :]).strip():
                        raise ParseError(j, 0, "unexpected text after '}'")
                    expression = "\n".join(body_parts).strip()
                    if not expression:
                        raise ParseError(j, idx, "empty condition expression")
                    if name in conditions:
                        raise ParseError(
                            i, npos.column, f"condition {name!r} defined twice", npos.end
                        )
                    conditions[name] = Condition(name, params, expression, npos)
                    return j + 1
        body_parts.append(segment)
        j += 1
        if j >= len(lines):
            raise ParseError(j - 1, 0, "unterminated condition body, expecting '}'")
        segment = lines[j]
