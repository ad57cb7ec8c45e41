"""The signals part of one node: the SSF transmitter (streams and SET outbox), its push
worker (driven by the event tailer) and the SSF receiver."""

from __future__ import annotations

from dataclasses import dataclass

from tessera.signals.delivery import PushWorker
from tessera.signals.receiver import SsfReceiver
from tessera.signals.streams import SsfTransmitter
from tessera.signals.tailer import EventTailer


@dataclass
class Signals:
    transmitter: SsfTransmitter
    push: PushWorker
    receiver: SsfReceiver

    def follow(self, tailer: EventTailer) -> None:
        """Every batch the tailer reads wakes the push worker (new events, new SETs)."""
        tailer.subscribe("ssf-outbox", self.push.on_events)

    def start(self) -> None:
        self.push.start()

    def stop(self) -> None:
        self.push.stop()
