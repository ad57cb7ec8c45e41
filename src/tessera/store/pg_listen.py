"""PostgreSQL ``LISTEN tessera_events``: wakes the event tailer when a writer commits.

Writers send ``pg_notify('tessera_events', seq)`` in the appending transaction (decisions.md
3), delivered at commit. A notification is a hint, never data: the tailer still reads the
log from its own sequence number, and polls when notifications are lost (a dropped
connection, a restart). The listener holds one dedicated autocommit connection outside the
pool and reconnects with capped backoff; every (re)connect wakes the tailer once, because
notifications sent while it was away are gone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
import psycopg.sql
from sqlalchemy import Engine

log = logging.getLogger("tessera.signals")

CHANNEL = "tessera_events"
MAX_BACKOFF = 5.0


def libpq_conninfo(engine: Engine) -> str:
    """The engine's database as a libpq URI (``postgresql+psycopg://`` → ``postgresql://``)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class PgNotifyWake:
    """``WakeSource`` over a dedicated psycopg connection (PostgreSQL LISTEN/NOTIFY)."""

    def __init__(self, conninfo: str, *, channel: str = CHANNEL, connect_timeout: int = 5) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._connect_timeout = connect_timeout
        self.connected = threading.Event()

    def run(self, wake: Callable[[], None], stopped: threading.Event) -> None:
        backoff = 0.1
        while not stopped.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
                ) as conn:
                    listen = psycopg.sql.SQL("LISTEN {}").format(
                        psycopg.sql.Identifier(self._channel)
                    )
                    conn.execute(listen)
                    self.connected.set()
                    wake()  # anything sent while we were not listening is lost: read now
                    backoff = 0.1
                    while not stopped.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            wake()
            except Exception as exc:  # reconnect; the poll keeps the node correct meanwhile
                self.connected.clear()
                log.warning("event listener disconnected: %s", type(exc).__name__)
                stopped.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
        self.connected.clear()
