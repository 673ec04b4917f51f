"""Erasure that erases: a resident's rows overwritten, the pages handed back, the WAL emptied.

``open_database`` turns ``secure_delete`` on, so SQLite overwrites deleted
content with zeros in the pages themselves. That is not enough on its own:
the pages still sit in the file (on the free list) and, in WAL mode, older
copies of them sit in the ``-wal`` file until a checkpoint. :func:`reclaim`
hands free pages back (``incremental_vacuum``; migration 0005 turned
``auto_vacuum=INCREMENTAL`` on) and checkpoints the WAL with ``TRUNCATE``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import sqlite_utils

log = logging.getLogger(__name__)

#: auto_vacuum value for INCREMENTAL.
_INCREMENTAL = 2


@dataclass(frozen=True)
class Erased:
    """What one erasure removed (row counts)."""

    resident: int
    templates: int
    checkins: int


def erase_resident(db: sqlite_utils.Database, resident_id: str) -> Erased:
    """Delete a resident, their templates and their delivered check-ins.

    Runs inside the caller's transaction. Check-ins not yet delivered stay:
    they are the back end's record of attendance and go once delivered
    (retention), or with the next erasure of the same resident.
    """
    templates = db.execute("DELETE FROM templates WHERE resident_id = ?", [resident_id]).rowcount
    resident = db.execute("DELETE FROM residents WHERE id = ?", [resident_id]).rowcount
    checkins = db.execute(
        "DELETE FROM checkins WHERE resident_id = ? AND delivered_at IS NOT NULL", [resident_id]
    ).rowcount
    return Erased(resident, templates, checkins)


def reclaim(db: sqlite_utils.Database, *, attempts: int = 40) -> bool:
    """After a committed erasure: free pages handed back, the WAL checkpointed and truncated.

    Must run outside a transaction. True when the WAL was emptied; False if
    readers kept it busy for all ``attempts`` (it is then emptied by the next
    checkpoint that gets through, and the caller should say so).
    """
    if db.conn.in_transaction:
        raise RuntimeError("reclaim() must run after the erasing transaction has committed")
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
        db.execute("PRAGMA incremental_vacuum").fetchall()
    else:  # a file made before migration 0005 could not be switched over
        db.execute("VACUUM")
    for _ in range(attempts):
        busy, _frames, _done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return True
        time.sleep(0.05)
    log.warning("erasure: the WAL could not be checkpointed (readers busy); it will be at the next checkpoint")
    return False
