"""The back-end store's schema: one list of versioned migrations for SQLite and PostgreSQL.

Each migration is plain SQL in the subset both databases speak (TEXT,
BIGINT, DOUBLE PRECISION, composite primary keys, partial-free indexes), so
the schema is the same on both. ``schema_version`` records what was applied;
:func:`kiosk.backend.store.Store.migrate` applies the rest in order, each in
its own transaction, under a lock so that several ingest processes starting
at once migrate only once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "events_devices_refused",
        (
            # One row per verified event; (site, device, event_id) makes storing idempotent.
            # Columns the reports read; the whole claim set is kept as JSON (without
            # the evidence crop, which has a column of its own).
            """CREATE TABLE events (
                site TEXT NOT NULL,
                device TEXT NOT NULL,
                event_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                type TEXT NOT NULL,
                outcome TEXT,
                method TEXT,
                resident_id TEXT,
                event_time DOUBLE PRECISION NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                stored_at DOUBLE PRECISION NOT NULL,
                flags TEXT,
                claims TEXT NOT NULL,
                evidence_jpeg TEXT,
                PRIMARY KEY (site, device, event_id)
            )""",
            "CREATE INDEX events_by_time ON events (event_time)",
            "CREATE INDEX events_by_resident ON events (resident_id, event_time)",
            "CREATE INDEX events_by_door ON events (site, device, event_time)",
            # Per door: the highest sequence number stored (a sequence that goes
            # back is flagged) and when it was last heard from.
            """CREATE TABLE devices (
                site TEXT NOT NULL,
                device TEXT NOT NULL,
                last_seq BIGINT NOT NULL,
                last_event_time DOUBLE PRECISION NOT NULL,
                last_received_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (site, device)
            )""",
            # Messages refused: why, where and when, never the payload's plaintext
            # (only its size and the SHA-256 of the bytes as received).
            """CREATE TABLE refused (
                id TEXT PRIMARY KEY,
                received_at DOUBLE PRECISION NOT NULL,
                topic TEXT NOT NULL,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL,
                payload_bytes BIGINT NOT NULL,
                payload_sha256 TEXT NOT NULL
            )""",
            "CREATE INDEX refused_by_time ON refused (received_at)",
            # Erasures done (when and how many rows), without whose.
            """CREATE TABLE erasures (
                id TEXT PRIMARY KEY,
                erased_at DOUBLE PRECISION NOT NULL,
                events BIGINT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "tombstones",
        (
            # What erasure and purge leave behind, so that a redelivery or a replay
            # of what was deleted is refused instead of stored again: the keys of
            # erased events (kept until they are past retention), and each erased
            # resident as a keyed hash of the id (never the id itself) with when.
            """CREATE TABLE tombstones (
                site TEXT NOT NULL,
                device TEXT NOT NULL,
                event_id TEXT NOT NULL,
                event_time DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (site, device, event_id)
            )""",
            "CREATE INDEX tombstones_by_time ON tombstones (event_time)",
            """CREATE TABLE erased_residents (
                resident_hash TEXT PRIMARY KEY,
                erased_at DOUBLE PRECISION NOT NULL
            )""",
            # The store's own facts: the random key for those hashes (made once, on
            # migration), and the cutoff of the latest purge (older events stay out).
            """CREATE TABLE store_meta (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        3,
        "console",
        (
            # The console's people (kiosk.console): one row per person, an argon2id hash,
            # a role (admin or viewer). ``session_epoch`` goes up when a password changes or
            # the account is disabled, so that sessions signed before it end at once.
            """CREATE TABLE console_accounts (
                username TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                password_hash TEXT NOT NULL,
                disabled BIGINT NOT NULL DEFAULT 0,
                session_epoch BIGINT NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL,
                last_login_at DOUBLE PRECISION
            )""",
            # Every change made through the console: who, what, to what, when, from where.
            """CREATE TABLE console_audit (
                id TEXT PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                detail TEXT NOT NULL,
                remote TEXT NOT NULL
            )""",
            "CREATE INDEX console_audit_by_time ON console_audit (at)",
            # Failed logins per name, and until when it is locked: a restart unlocks nothing.
            """CREATE TABLE console_logins (
                username TEXT PRIMARY KEY,
                failures BIGINT NOT NULL,
                first_failure_at DOUBLE PRECISION NOT NULL,
                locked_until DOUBLE PRECISION NOT NULL
            )""",
            # Each door's latest retained status and verified gallery ack, as the console last heard them.
            """CREATE TABLE console_doors (
                site TEXT NOT NULL,
                device TEXT NOT NULL,
                status TEXT,
                ack TEXT,
                heard_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (site, device)
            )""",
            # Today's page and a resident's history read events by type and time.
            "CREATE INDEX events_by_type ON events (type, event_time)",
        ),
    ),
    Migration(
        4,
        "proposals",
        (
            # Doors' proposals (enrollment at the door): one per invitation (its nonce), whichever door
            # sent it; the proposal as it came, sealed to the admin's key (the back end cannot read it);
            # pending until the admin approves or rejects it (kiosk-admin gallery review). Whose it is,
            # as the keyed hash erasure keeps (never the id): erasing a resident deletes their proposals,
            # sealed descriptors and all (kiosk.backend.proposals).
            """CREATE TABLE proposals (
                invitation TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                site TEXT NOT NULL,
                device TEXT NOT NULL,
                event_id TEXT NOT NULL,
                event_time DOUBLE PRECISION NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                proposal TEXT NOT NULL,
                status TEXT NOT NULL,
                decided_at DOUBLE PRECISION,
                note TEXT,
                resident_hash TEXT
            )""",
            "CREATE INDEX proposals_by_status ON proposals (status, received_at)",
            "CREATE INDEX proposals_by_resident ON proposals (resident_hash)",
        ),
    ),
    Migration(
        5,
        "events_by_receipt",
        (
            # Retention deletes an event by its time or by when it was received (a door whose clock ran
            # ahead): with this index beside events_by_time, the purge reads both, not the whole table.
            "CREATE INDEX events_by_receipt ON events (received_at)",
        ),
    ),
)

#: The schema version this code writes and reads.
SCHEMA_VERSION = MIGRATIONS[-1].version
