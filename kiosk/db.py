"""The kiosk's SQLite database: opening, pragmas and versioned migrations.

One file holds the gallery (residents, templates) and the check-in outbox.
SQLite is the source of truth; MQTT only carries copies.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from .errors import StorageError
from .privatefile import private_database

log = logging.getLogger(__name__)

migrations = Migrations("kiosk")


@migrations(name="0001_gallery_and_checkins")
def _m0001(db: sqlite_utils.Database) -> None:
    db["residents"].create(
        {
            "id": str,  # opaque resident id chosen by the admin
            "name": str,  # display name; never logged, never published
            "valid_from": float,  # unix seconds or NULL
            "valid_until": float,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"name", "created_at", "updated_at"},
    )
    db["templates"].create(
        {
            "id": int,
            "resident_id": str,
            "vector": bytes,  # AES-GCM sealed float32[128]
            "source_sha256": str,  # hash of the enrolled photo (photo not kept)
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("resident_id", "residents", "id")],
        not_null={"resident_id", "vector", "created_at"},
    )
    db["templates"].create_index(["resident_id"])
    # The outbox: seq is the per-device sequence number.
    db.execute(
        """
        CREATE TABLE checkins (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            outcome TEXT NOT NULL,
            resident_id TEXT,
            distance REAL,
            margin REAL,
            frames INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            created_at REAL NOT NULL,
            claims TEXT NOT NULL,
            delivered_at REAL
        )
        """
    )
    db["checkins"].create_index(["delivered_at", "seq"])
    db["meta"].create({"key": str, "value": str}, pk="key")


@migrations(name="0002_outbox_evidence_and_budget")
def _m0002(db: sqlite_utils.Database) -> None:
    # An optional JPEG evidence crop, published only inside the encryption and
    # erased once the event is delivered.
    db.execute("ALTER TABLE checkins ADD COLUMN evidence BLOB")
    # When the disk budget is reached, undelivered non-check-ins go first.
    db.execute("CREATE INDEX checkins_pending_by_type ON checkins(type, seq) WHERE delivered_at IS NULL")


@migrations(name="0003_qr_token_nonces")
def _m0003(db: sqlite_utils.Database) -> None:
    # Nonces of residents' QR credentials already used, kept until the
    # credential expires: a replayed code is refused, also after a restart.
    db.execute(
        "CREATE TABLE qr_nonces (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL, used_at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX qr_nonces_expiry ON qr_nonces(expires_at)")


@migrations(name="0004_gallery_updates")
def _m0004(db: sqlite_utils.Database) -> None:
    # Device side: the gallery updates applied, by id and version only (no
    # resident data), so that a replayed update is told from a rollback.
    db.execute(
        "CREATE TABLE gallery_updates (update_id TEXT PRIMARY KEY, version INTEGER NOT NULL,"
        " kind TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    # Admin side: what was published to each site, and each resident's
    # fingerprint as last published there (deltas are computed against it).
    db.execute(
        "CREATE TABLE gallery_publications (site TEXT NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL,"
        " update_id TEXT NOT NULL, digest TEXT NOT NULL, residents INTEGER NOT NULL, published_at REAL NOT NULL,"
        " PRIMARY KEY (site, version))"
    )
    db.execute(
        "CREATE TABLE gallery_published (site TEXT NOT NULL, resident_id TEXT NOT NULL, fingerprint TEXT NOT NULL,"
        " PRIMARY KEY (site, resident_id))"
    )


@migrations(name="0005_incremental_vacuum", transactional=False)
def _m0005(db: sqlite_utils.Database) -> None:
    # Erasure hands the freed pages back (PRAGMA incremental_vacuum), so that
    # nothing of an erased resident stays in the file. auto_vacuum can only
    # be switched on by rebuilding the file once.
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    db.execute("VACUUM")


@migrations(name="0006_door_templates")
def _m0006(db: sqlite_utils.Database) -> None:
    # Admin side: a door template (kiosk.gallery.adapt) names the visit it came from; NULL for enrolled ones.
    # Doors get templates from gallery updates, which do not tell them apart.
    db.execute("ALTER TABLE templates ADD COLUMN door_visit TEXT")
    db.execute("CREATE UNIQUE INDEX templates_door_visit ON templates(door_visit) WHERE door_visit IS NOT NULL")


def open_database(path: Path | str, *, create: bool = True) -> sqlite_utils.Database:
    """Open (and migrate) the kiosk database at ``path``.

    WAL mode with ``synchronous=FULL``: a committed check-in survives a power
    cut. Foreign keys are enforced and deleted data is overwritten
    (``secure_delete``), since templates and check-ins are personal data.
    """
    path = Path(path)
    if not create and not path.exists():
        raise StorageError(f"{path}: database does not exist")
    try:
        private_database(path)  # 0600 before SQLite opens it; its -wal and -shm follow
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA secure_delete=ON")
        migrations.apply(db)
    except sqlite3.DatabaseError as e:
        raise StorageError(f"{path}: cannot open database: {e}") from e
    return db


def get_meta(db: sqlite_utils.Database, key: str, default: str | None = None) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else default


def set_meta(db: sqlite_utils.Database, key: str, value: str) -> None:
    db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", [key, value])
