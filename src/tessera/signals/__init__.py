"""The durable event log, SSF streams, CAEP events and receivers."""
