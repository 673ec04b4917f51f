"""Applying a verified gallery update: all of it in one SQLite transaction, or nothing.

Before the write lock is taken, the templates are sealed (AES-GCM, resident
id as associated data) and the new in-memory gallery is derived from the
one being searched and checked against the admin's digest; the transaction
itself then only writes rows and records the version and the update's id.
When the database does not hold what the searched gallery says (another
version, other row counts), the new gallery is instead loaded from the rows
just written and checked inside the transaction. Any failure rolls
everything back. Erased residents' pages are then handed back and the WAL
emptied (:mod:`kiosk.gallery.erasure`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

import numpy as np

from ...db import set_meta
from ...errors import StorageError, UpdateRejected
from ...gallery.erasure import erase_resident, reclaim
from ...gallery.store import FPIR_CAP_KEY, Gallery, GalleryStore, Resident
from ...gallery.templates import DIMENSIONS
from .format import GalleryUpdate, Upsert, check_match, check_target, check_version, reject

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
    seconds: float  # the whole apply
    locked_s: float  # of which the write lock was held (a check-in commit waits at most that)


def held_version(store: GalleryStore) -> int:
    """The gallery version this device holds (0 before any update)."""
    text = store.version()
    try:
        return int(text)
    except ValueError:
        raise StorageError(f"gallery_version {text!r} in the database is not a number") from None


def was_applied(store: GalleryStore, update_id: str) -> bool:
    return store.db.execute("SELECT 1 FROM gallery_updates WHERE update_id = ?", [update_id]).fetchone() is not None


def derive(current: Gallery, update: GalleryUpdate) -> Gallery:
    """The gallery ``update`` makes of ``current``, built in memory (nothing decrypted)."""
    upserts = [op for op in update.ops if isinstance(op, Upsert)]
    owners: list[str] = []
    rows: list[np.ndarray] = []
    if update.snapshot:
        residents: dict[str, Resident] = {}
    else:
        touched = {op.id for op in update.ops}
        residents = {rid: r for rid, r in current.residents.items() if rid not in touched}
        counts = np.diff(np.append(current.starts, current.matrix.shape[0]))
        row_owner = np.repeat(np.asarray(current.ids, dtype=object), counts)
        keep = np.fromiter((o not in touched for o in row_owner), dtype=bool, count=len(row_owner))
        owners += row_owner[keep].tolist()
        rows.append(current.matrix[keep])
    for op in upserts:
        residents[op.id] = Resident(op.id, op.name, op.valid_from, op.valid_until)
        vectors = op.vectors()
        owners += [op.id] * len(vectors)
        rows.append(np.vstack(vectors))
    matrix = np.vstack(rows) if rows else np.zeros((0, DIMENSIONS), np.float32)
    cap = update.match.fpir_target if update.match is not None else current.fpir_cap
    return Gallery(residents, owners, matrix, version=str(update.version), fpir_cap=cap)


def apply_update(store: GalleryStore, update: GalleryUpdate, *, site: str, device: str, now: float,
                 skew: float, current: Gallery | None = None, own_target: float = 0.0) -> Applied:
    """Check target, expiry and version, then apply every operation in one transaction.

    :param current: the gallery being searched, if any: the new one is then
        derived from it in memory, outside the write lock.
    :param own_target: the device's ``match.fpir_target``: an update's ``match`` target must be at
        least as strict as it and any cap held (``looser_match``, nothing applied).

    Raises :class:`UpdateRejected` (nothing changed) for a refusal, including
    ``digest_mismatch`` when the result would not hash to ``update.digest``
    and ``storage`` when SQLite refuses the change.
    """
    started = time.perf_counter()
    check_target(update, site=site, device=device, now=now, skew=skew)
    upserts = [op for op in update.ops if isinstance(op, Upsert)]
    # The costly parts, done before the write lock is taken (check-ins wait for it).
    sealed = [(op, [store.cipher.seal(v, op.id) for v in op.vectors()]) for op in upserts]
    derived = derive(current, update) if current is not None and current.version.isdigit() else None
    if derived is not None and derived.digest() != update.digest:
        derived = None  # refused below, unless the database holds something else than the searched gallery
    db = store.db
    try:
        db.execute("BEGIN IMMEDIATE")
        locked = time.perf_counter()
    except sqlite3.Error as e:
        raise reject("storage", f"cannot start the transaction: {e}") from None
    try:
        held = held_version(store)
        check_version(update, held, lambda uid: was_applied(store, uid))
        check_match(update, own_target, store.fpir_cap())
        if derived is not None:
            counts = db.execute("SELECT (SELECT COUNT(*) FROM residents), (SELECT COUNT(*) FROM templates)").fetchone()
            if held != int(current.version) or tuple(counts) != (len(current.residents), current.template_count):
                log.warning("the searched gallery is not what the database holds; loading the update's result from it")
                derived = None
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
        if update.match is not None:
            set_meta(db, FPIR_CAP_KEY, repr(float(update.match.fpir_target)))
        db.execute(
            "INSERT INTO gallery_updates(update_id, version, kind, applied_at) VALUES (?,?,?,?)",
            [update.update_id, update.version, update.kind, now],
        )
        gallery = derived if derived is not None else store.load()
        digest = update.digest if derived is not None else gallery.digest()
        if digest != update.digest:
            raise reject("digest_mismatch", "the gallery after this update would not hash to the admin's digest")
        db.execute("COMMIT")
        locked = time.perf_counter() - locked
    except UpdateRejected:
        _rollback(db)
        raise
    except (sqlite3.Error, StorageError) as e:
        _rollback(db)
        raise reject("storage", f"{type(e).__name__}: {e}") from None
    except BaseException:
        _rollback(db)
        raise
    # Deleted rows (erased residents, replaced templates) leave no pages behind. The update is committed: a
    # failure here (the card full or failing, the file busy) is not the update's, and is retried later.
    try:
        reclaimed = reclaim(db) if gone or replaced else True
    except sqlite3.Error as e:
        log.warning("erased pages not reclaimed yet (%s); tried again later", type(e).__name__)
        reclaimed = False
    return Applied(gallery, update.version, digest, len(upserts), erased, purged, reclaimed,
                   time.perf_counter() - started, locked)


def _rollback(db) -> None:
    if db.conn.in_transaction:
        db.execute("ROLLBACK")
