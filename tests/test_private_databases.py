"""Issue 19, finding 5: every SQLite database we create is 0600, whatever the umask, with its -wal and -shm.

The kiosk's database (gallery, nonces, the check-in outbox), the back end's
SQLite store and the reference consumer's seen-ids file, each opened by the
real code under ``umask 022`` (what a shell, ``kiosk-admin`` or a container
has; the units' ``UMask=0077`` does not reach them). Before the fix the
back end's store and the seen-ids file were created 0644, readable by every
local user, and a database left 0644 by an earlier run stayed so.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time

import pytest

from kiosk.backend.store import Incoming, open_store
from kiosk.match.decide import Decision, Outcome
from kiosk.backend.consumer import SeenIds
from kiosk.sync.events.outbox import Outbox


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def use_outbox(path):
    outbox = Outbox.open(path, site="elm-court", device="door-1")
    outbox.commit(Decision(Outcome.UNKNOWN, 1, distance=0.7, frames=4))
    return outbox.close


def use_backend_store(path):
    store = open_store(f"sqlite:///{path}")
    claims = {"event_id": "e1", "seq": 1, "site": "elm-court", "device": "door-1", "type": "checkin",
              "outcome": "ACCEPTED", "method": "face", "resident_id": "r-1", "time": time.time(), "v": 1}
    store.store_batch([Incoming(claims, received_at=time.time())], [])
    return store.close


def use_seen_ids(path):
    seen = SeenIds(path)
    assert seen.add(("elm-court", "door-1", "e1"), 1, time.time())
    return seen.close


OPENERS = {"kiosk outbox": use_outbox, "back-end store": use_backend_store, "seen ids": use_seen_ids}


def modes(path) -> dict[str, str]:
    """The mode of the database and of each companion file that exists."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        f = path.parent / (path.name + suffix)
        if f.exists():
            out[suffix or "db"] = f"{stat.S_IMODE(f.stat().st_mode):04o}"
    return out


@pytest.mark.parametrize("use", OPENERS.values(), ids=OPENERS.keys())
def test_a_new_database_and_its_wal_and_shm_are_0600(use, umask_022, tmp_path):
    path = tmp_path / "events.db"
    close = use(path)
    try:
        # While it is open in WAL mode all three files exist; SQLite gives -wal and -shm the database's mode.
        assert modes(path) == {"db": "0600", "-wal": "0600", "-shm": "0600"}
    finally:
        close()
    assert set(modes(path).values()) == {"0600"}


@pytest.mark.parametrize("use", OPENERS.values(), ids=OPENERS.keys())
def test_a_database_others_could_read_is_tightened_with_a_warning(use, umask_022, tmp_path, caplog):
    path = tmp_path / "events.db"
    sqlite3.connect(path).close()  # as an earlier version left it: 0644
    (tmp_path / "events.db-shm").write_bytes(b"")  # and a companion left by a crash
    assert modes(path) == {"db": "0644", "-shm": "0644"}
    caplog.set_level(logging.WARNING)
    use(path)()
    assert set(modes(path).values()) == {"0600"}
    warned = [r.getMessage() for r in caplog.records if "database file" in r.getMessage()]
    assert len(warned) == 2 and "mode 0644" in warned[0] and "0600 now" in warned[0], warned
