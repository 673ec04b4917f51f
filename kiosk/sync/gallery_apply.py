"""Applying a verified gallery update: all of it in one SQLite transaction, or nothing.

The templates are sealed (AES-GCM, resident id as associated data) before
the write lock is taken, so the transaction itself is short: rows in, the
version and the update's id recorded, the new gallery loaded from those
rows and its hash compared with the admin's. Any failure rolls everything
back. Erased residents' pages are then handed back and the WAL emptied
(:mod:`kiosk.match.erasure`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

from ..db import set_meta
from ..errors import StorageError, UpdateRejected
from ..match.erasure import erase_resident, reclaim
from ..match.gallery import Gallery, GalleryStore
from .updates import GalleryUpdate, Upsert, check_target, check_version, reject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """The outcome of an applied update."""

    gallery: Gallery
    version: int
    digest: str
    upserted: int
    erased: int
    checkins_purged: int
    reclaimed: bool
    seconds: float


def held_version(store: GalleryStore) -> int:
    """The gallery version this device holds (0 before any update)."""
    text = store.version()
    try:
        return int(text)
    except ValueError:
        raise StorageError(f"gallery_version {text!r} in the database is not a number") from None


def was_applied(store: GalleryStore, update_id: str) -> bool:
    return store.db.execute("SELECT 1 FROM gallery_updates WHERE update_id = ?", [update_id]).fetchone() is not None


def apply_update(store: GalleryStore, update: GalleryUpdate, *, site: str, device: str, now: float,
                 skew: float) -> Applied:
    """Check target, expiry and version, then apply every operation in one transaction.

    Raises :class:`UpdateRejected` (nothing changed) for a refusal, including
    ``digest_mismatch`` when the result would not hash to ``update.digest``
    and ``storage`` when SQLite refuses the change.
    """
    started = time.perf_counter()
    check_target(update, site=site, device=device, now=now, skew=skew)
    upserts = [op for op in update.ops if isinstance(op, Upsert)]
    # Sealing is the costly part: done before the write lock is taken.
    sealed = [(op, [store.cipher.seal(v, op.id) for v in op.vectors()]) for op in upserts]
    db = store.db
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        raise reject("storage", f"cannot start the transaction: {e}") from None
    try:
        check_version(update, held_version(store), lambda uid: was_applied(store, uid))
        if update.snapshot:
            keep = {op.id for op in upserts}
            gone = [r for (r,) in db.execute("SELECT id FROM residents") if r not in keep]
        else:
            gone = [op.id for op in update.ops if not isinstance(op, Upsert)]
        erased = purged = replaced = 0
        for rid in gone:
            e = erase_resident(db, rid)
            erased += e.resident
            purged += e.checkins
        for op, blobs in sealed:
            db.execute(
                "INSERT INTO residents(id, name, valid_from, valid_until, created_at, updated_at) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET name=excluded.name, valid_from=excluded.valid_from,"
                " valid_until=excluded.valid_until, updated_at=excluded.updated_at",
                [op.id, op.name, op.valid_from, op.valid_until, now, now],
            )
            replaced += db.execute("DELETE FROM templates WHERE resident_id = ?", [op.id]).rowcount
            db.conn.executemany(
                "INSERT INTO templates(resident_id, vector, source_sha256, created_at) VALUES (?, ?, NULL, ?)",
                [(op.id, blob, now) for blob in blobs],
            )
        set_meta(db, "gallery_version", str(update.version))
        db.execute(
            "INSERT INTO gallery_updates(update_id, version, kind, applied_at) VALUES (?,?,?,?)",
            [update.update_id, update.version, update.kind, now],
        )
        gallery = store.load()
        digest = gallery.digest()
        if digest != update.digest:
            raise reject("digest_mismatch", "the gallery after this update would not hash to the admin's digest")
        db.execute("COMMIT")
    except UpdateRejected:
        _rollback(db)
        raise
    except (sqlite3.Error, StorageError) as e:
        _rollback(db)
        raise reject("storage", f"{type(e).__name__}: {e}") from None
    except BaseException:
        _rollback(db)
        raise
    # Deleted rows (erased residents, replaced templates) leave no pages behind.
    reclaimed = reclaim(db) if gone or replaced else True
    return Applied(gallery, update.version, digest, len(upserts), erased, purged, reclaimed,
                   time.perf_counter() - started)


def _rollback(db) -> None:
    if db.conn.in_transaction:
        db.execute("ROLLBACK")
