"""The right-hand side of ``define`` in the OpenFGA DSL: direct assignment
(``[user, user:*, group#member, user with cond]``) and rewrites (``or``, ``and``,
``but not``, ``x from y``, parentheses). OpenFGA's grammar allows one kind of operator per
parenthesis level and a direct assignment only in first position; errors are reported
where OpenFGA's parser reports them (at the blank before an unexpected operator at the
top level, at the token inside parentheses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tessera.rebac.errors import ModelIssue
from tessera.rebac.model import (
    Computed,
    Difference,
    Intersection,
    Pos,
    Rewrite,
    This,
    TupleToUserset,
    TypeRestriction,
    Union,
)

NAME = re.compile(r"[A-Za-z0-9_\-./]+")


class ParseError(Exception):
    def __init__(self, line: int, column: int, message: str, end: int | None = None) -> None:
        super().__init__(message)
        self.issue = ModelIssue("syntax", message, line, column, column + 1 if end is None else end)


@dataclass(slots=True)
class Token:
    kind: str  # name, punct, kw
    text: str
    col: int
    ws_before: int | None  # column where preceding whitespace started, if any


def tokenize(text: str, line: int, start: int) -> list[Token]:
    toks: list[Token] = []
    i = start
    n = len(text)
    while i < n:
        ws: int | None = None
        if text[i] in " \t":
            ws = i
            while i < n and text[i] in " \t":
                i += 1
            if i >= n:
                break
        ch = text[i]
        if ch in "[](),#:*":
            toks.append(Token("punct", ch, i, ws))
            i += 1
            continue
        m = NAME.match(text, i)
        if not m:
            raise ParseError(line, i, f"unexpected character {ch!r}")
        word = m.group(0)
        if (
            word == "but"
            and text.startswith(" not", m.end())
            and (m.end() + 4 >= n or text[m.end() + 4] in " \t()")
        ):
            toks.append(Token("kw", "but not", i, ws))
            i = m.end() + 4
            continue
        kind = "kw" if word in ("or", "and", "from", "with") else "name"
        toks.append(Token(kind, word, i, ws))
        i = m.end()
    return toks


class ExprParser:
    """Right-hand side of ``define``: direct assignment and rewrite operators."""

    def __init__(self, toks: list[Token], line: int, eol: int) -> None:
        self.toks = toks
        self.i = 0
        self.line = line
        self.eol = eol
        self.restrictions: list[TypeRestriction] | None = None

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def fail(self, tok: Token | None, what: str, *, at_ws: bool = False) -> ParseError:
        if tok is None:
            return ParseError(self.line, self.eol, f"unexpected end of line, expecting {what}")
        col = tok.ws_before if at_ws and tok.ws_before is not None else tok.col
        return ParseError(
            self.line,
            col,
            f"unexpected {tok.text!r}, expecting {what}",
            col + len(tok.text) if col == tok.col else tok.col,
        )

    def name(self) -> Token:
        tok = self.peek()
        if tok is None or tok.kind != "name":
            raise self.fail(tok, "a name")
        self.i += 1
        return tok

    def expect(self, text: str) -> Token:
        tok = self.peek()
        if tok is None or tok.text != text:
            raise self.fail(tok, repr(text))
        self.i += 1
        return tok

    def parse(self) -> Rewrite:
        node = self.expr(top=True, first=True)
        tok = self.peek()
        if tok is not None:
            raise self.fail(tok, "end of line", at_ws=True)
        return node

    def expr(self, *, top: bool, first: bool) -> Rewrite:
        left = self.term(first=first)
        tok = self.peek()
        if tok is None or tok.kind != "kw" or tok.text not in ("or", "and", "but not"):
            return left
        op = tok.text
        if op == "but not":
            self.i += 1
            right = self.term(first=False)
            return Difference(left, right)
        children = [left]
        while True:
            tok = self.peek()
            if tok is None or tok.text != op:
                break
            self.i += 1
            children.append(self.term(first=False))
        return Union(tuple(children)) if op == "or" else Intersection(tuple(children))

    def term(self, *, first: bool) -> Rewrite:
        tok = self.peek()
        if tok is None:
            raise self.fail(tok, "a relation")
        if tok.text == "[":
            if not first or self.restrictions is not None:
                raise self.fail(tok, "a relation or '('")
            self.i += 1
            self.restrictions = self.type_restrictions()
            return This(Pos(self.line, tok.col, tok.col + 1))
        if tok.text == "(":
            self.i += 1
            inner = self.expr(top=False, first=first)
            close = self.peek()
            if close is None or close.text != ")":
                raise self.fail(close, "')'")
            self.i += 1
            return inner
        computed = self.name()
        nxt = self.peek()
        if nxt is not None and nxt.text == "from":
            self.i += 1
            ts = self.name()
            return TupleToUserset(
                ts.text,
                computed.text,
                Pos(self.line, computed.col, ts.col + len(ts.text)),
                Pos(self.line, ts.col, ts.col + len(ts.text)),
            )
        return Computed(
            computed.text, Pos(self.line, computed.col, computed.col + len(computed.text))
        )

    def type_restrictions(self) -> list[TypeRestriction]:
        out: list[TypeRestriction] = []
        while True:
            t = self.name()
            relation: str | None = None
            wildcard = False
            end = t.col + len(t.text)
            nxt = self.peek()
            if nxt is not None and nxt.text == ":" and nxt.ws_before is None:
                self.i += 1
                star = self.peek()
                if star is None or star.text != "*":
                    raise self.fail(star, "'*'")
                self.i += 1
                wildcard = True
                end = star.col + 1
            elif nxt is not None and nxt.text == "#" and nxt.ws_before is None:
                self.i += 1
                rel = self.name()
                relation = rel.text
                end = rel.col + len(rel.text)
            condition: str | None = None
            cpos = Pos()
            nxt = self.peek()
            if nxt is not None and nxt.text == "with":
                self.i += 1
                c = self.name()
                condition = c.text
                cpos = Pos(self.line, c.col, c.col + len(c.text))
            out.append(
                TypeRestriction(
                    t.text, relation, wildcard, condition, Pos(self.line, t.col, end), cpos
                )
            )
            sep = self.peek()
            if sep is not None and sep.text == ",":
                self.i += 1
                continue
            if sep is not None and sep.text == "]":
                self.i += 1
                return out
            raise self.fail(sep, "',' or ']'")
