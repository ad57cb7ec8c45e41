"""Signals on the wire: the event tailer's server lifecycle and the Shared Signals routes.

``install(app, tessera)`` starts the node's event tailer with the server (poll thread and,
on PostgreSQL, the LISTEN connection) and stops it at shutdown.
"""

from __future__ import annotations

from fastapi import FastAPI

from tessera.app import Tessera


def install(app: FastAPI, tessera: Tessera) -> None:
    """Wire the tailer lifecycle into the server app."""
    app.router.on_startup.append(tessera.tailer.start)
    app.router.on_shutdown.append(tessera.tailer.stop)
