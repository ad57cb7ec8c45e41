"""The tamper-evident audit ledger: records, hash chain, signed checkpoints, verification.

Pure logic plus ``AuditService`` (which takes its store, clock and keys as arguments); the
SQL side is ``tessera.store.sql_audit``. See docs/audit.md.
"""

from tessera.audit.chain import GENESIS_HASH, ChainHead, Problem
from tessera.audit.checkpoint import Checkpoint, DirectoryCheckpointSink
from tessera.audit.ports import AuditQuery
from tessera.audit.record import ActorLayers, AuditEntry
from tessera.audit.service import AuditService, AuditSettings
from tessera.audit.verify import VerifyReport

__all__ = [
    "GENESIS_HASH",
    "ActorLayers",
    "AuditEntry",
    "AuditQuery",
    "AuditService",
    "AuditSettings",
    "ChainHead",
    "Checkpoint",
    "DirectoryCheckpointSink",
    "Problem",
    "VerifyReport",
]
