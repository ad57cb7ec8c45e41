"""Printing for the CLI: rich tables for people, ``--json`` for machines, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from tessera.errors import TesseraError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

USAGE_ERROR = 2


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    err_console.print(f"error: {first_line}", markup=False)
    raise typer.Exit(code)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn Tessera errors into one line on stderr and exit code 2 (never a traceback)."""
    try:
        yield
    except TesseraError as exc:
        fail(exc.message)
    except (OSError, ValueError) as exc:
        fail(str(exc))


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def emit(value: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        emit_json(value)
    else:
        human()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    console.print(t)


def kv(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        if isinstance(value, dict | list):
            value = json.dumps(value, sort_keys=True)
        console.print(f"{key:<{width}}  {value}", markup=False)
