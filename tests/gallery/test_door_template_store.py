"""Door templates in the admin's enrollment database (kiosk.gallery.store on a real kiosk database, templates
sealed at rest): admitted by the policy, replaced oldest first, revoked, erased; the migration that makes room.

Real descriptors: r-hu is enrolled from one photo of Hu Jintao of the shared LFW development set; their other
photos are the door's views of them, a photo of Wen Jiabao a stranger's face."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import sqlite_utils

from conftest import HU, WEN
from kiosk.db import migrations, open_database
from kiosk.gallery.adapt import NOT_ANCHORED, NOTHING_NEW, AdaptPolicy
from kiosk.gallery.store import GalleryStore, Resident
from kiosk.gallery.templates import TemplateCipher
from kiosk.privatefile import private_database

ANCHOR = 0.3947  # the calibrated threshold at a small gallery: what `gallery review` anchors on by default
VISITS = [f"0190f3a2-7c1e-7b3d-9a4f-2e8c5d6b1a{i:02d}" for i in range(10)]
T0 = 1_750_000_000.0


@pytest.fixture
def store(tmp_path, faces):
    s = GalleryStore(open_database(tmp_path / "kiosk.db"), TemplateCipher.from_file(tmp_path / "template.key"))
    s.enroll(Resident("r-hu", "Hu"), [(faces[HU][0], "photo-0")])
    s.enroll(Resident("r-wen", "Wen"), [(faces[WEN][0], "photo-w0")])
    yield s
    s.db.close()


def nearest(rows, x) -> float:
    return float(np.linalg.norm(np.atleast_2d(rows) - x, axis=1).min())


def rows(store, rid="r-hu") -> int:
    return store.db.execute("SELECT COUNT(*) FROM templates WHERE resident_id = ?", [rid]).fetchone()[0]


def test_admitted_within_the_anchor_stored_listed_and_loaded(store, faces):
    own = faces[HU]
    assert nearest(own[0], own[1]) <= ANCHOR
    before = store.load()
    a = store.admit_door_template("r-hu", own[1], VISITS[0], AdaptPolicy(ANCHOR), now=T0)
    assert a.admitted and a.reason is None and a.replaced is None
    assert a.anchor_distance == pytest.approx(nearest(own[0], own[1]), abs=1e-5)
    assert store.door_templates() == [("r-hu", VISITS[0], T0)]
    assert store.door_templates("r-hu") == [("r-hu", VISITS[0], T0)] and store.door_templates("r-wen") == []
    after = store.load()
    assert after.template_count == before.template_count + 1
    assert after.digest() == store.digest() != before.digest()
    # The door template is searched as the resident's.
    assert after.search(own[1]).resident_id == "r-hu" and after.search(own[1]).distance < 1e-3
    t = store.templates_of("r-hu")
    assert np.array_equal(t.enrolled, own[:1])
    assert [(d.source, d.added_at) for d in t.door] == [(VISITS[0], T0)]
    assert np.array_equal(t.door[0].vector, own[1])
    assert len(store.templates_of("r-wen").enrolled) == 1 and store.templates_of("r-wen").door == []
    # Sealed at rest like every template: the row holds no float of the face.
    blob = store.db.execute("SELECT vector FROM templates WHERE door_visit = ?", [VISITS[0]]).fetchone()[0]
    assert own[1].astype("<f4").tobytes()[:16] not in blob


def test_what_is_not_stored(store, faces):
    own, stranger = faces[HU], faces[WEN][3]
    policy = AdaptPolicy(ANCHOR)
    assert nearest(own[0], stranger) > ANCHOR
    a = store.admit_door_template("r-hu", stranger, VISITS[0], policy, now=T0)
    assert (a.admitted, a.reason) == (False, NOT_ANCHORED) and a.anchor_distance > ANCHOR
    # Too close to a template held (an enrolled one, or a door template) adds nothing.
    a = store.admit_door_template("r-hu", own[0] + np.float32(0.001), VISITS[1], policy, now=T0)
    assert (a.admitted, a.reason) == (False, NOTHING_NEW)
    assert store.admit_door_template("r-hu", own[1], VISITS[2], policy, now=T0).admitted
    a = store.admit_door_template("r-hu", own[1] + np.float32(0.001), VISITS[3], policy, now=T0 + 1)
    assert (a.admitted, a.reason) == (False, NOTHING_NEW)
    # The same visit twice: once only, even with another descriptor the policy would admit.
    assert nearest(own[0], own[3]) <= ANCHOR and nearest(own[1], own[3]) > policy.novelty
    a = store.admit_door_template("r-hu", own[3], VISITS[2], policy, now=T0 + 2)
    assert not a.admitted
    assert store.door_templates() == [("r-hu", VISITS[2], T0)]
    assert rows(store) == 2
    # A visit gives one door template, to one resident: the same visit id again for another refuses, not raises.
    wen = faces[WEN]
    assert nearest(wen[0], wen[1]) <= ANCHOR
    a = store.admit_door_template("r-wen", wen[1], VISITS[2], policy, now=T0 + 3)
    assert (a.admitted, a.reason) == (False, NOTHING_NEW) and rows(store, "r-wen") == 1
    # A resident with no enrolled template (or no templates at all) has nothing to anchor one to.
    store.upsert_resident(Resident("r-new", "New"))
    a = store.admit_door_template("r-new", own[1], VISITS[4], AdaptPolicy(anchor=4.0), now=T0)
    assert (a.admitted, a.reason) == (False, NOT_ANCHORED) and rows(store, "r-new") == 0
    assert store.admit_door_template("r-nobody", own[1], VISITS[5], AdaptPolicy(anchor=4.0), now=T0).reason == \
        NOT_ANCHORED
    assert store.db.execute("SELECT COUNT(*) FROM templates WHERE door_visit IS NOT NULL").fetchone()[0] == 1


def test_at_the_limit_the_oldest_door_template_goes_never_an_enrolled_one(store, faces):
    own = faces[HU]
    policy = AdaptPolicy(ANCHOR, max_door_templates=2)
    for i in (1, 2):
        assert store.admit_door_template("r-hu", own[i], VISITS[i], policy, now=T0 + i).admitted
    third = store.admit_door_template("r-hu", own[3], VISITS[3], policy, now=T0 + 3)
    assert third.admitted and third.replaced is not None and third.replaced.source == VISITS[1]
    assert store.door_templates("r-hu") == [("r-hu", VISITS[2], T0 + 2), ("r-hu", VISITS[3], T0 + 3)]
    t = store.templates_of("r-hu")
    assert np.array_equal(t.enrolled, own[:1]), "the enrolled template stays"
    assert [d.source for d in t.door] == [VISITS[2], VISITS[3]]
    assert np.array_equal(t.door[0].vector, own[2]) and np.array_equal(t.door[1].vector, own[3])
    assert rows(store) == 3 and rows(store, "r-wen") == 1
    # None kept: nothing is ever added, and nothing is taken.
    none = AdaptPolicy(ANCHOR, max_door_templates=0)
    assert store.admit_door_template("r-hu", own[1], VISITS[4], none, now=T0 + 4).reason == NOTHING_NEW
    assert rows(store) == 3


def test_revoked_and_erased(store, faces):
    own = faces[HU]
    policy = AdaptPolicy(ANCHOR)
    enrolled_only = store.load().template_count
    store.admit_door_template("r-hu", own[1], VISITS[1], policy, now=T0)
    store.admit_door_template("r-hu", own[2], VISITS[2], policy, now=T0 + 1)
    assert store.revoke_door_template(VISITS[1]) == "r-hu"
    assert store.revoke_door_template(VISITS[1]) is None, "gone"
    assert store.revoke_door_template(VISITS[9]) is None
    assert store.door_templates() == [("r-hu", VISITS[2], T0 + 1)]
    assert store.load().template_count == enrolled_only + 1
    assert np.array_equal(store.templates_of("r-hu").enrolled, own[:1])
    # Erasing the resident takes their door templates with the enrolled ones.
    assert store.erase("r-hu")
    assert store.door_templates() == [] and rows(store) == 0
    assert store.db.execute("SELECT COUNT(*) FROM templates WHERE door_visit IS NOT NULL").fetchone()[0] == 0
    assert set(store.residents()) == {"r-wen"}


def test_a_database_from_before_door_templates_is_migrated(tmp_path, faces):
    path = tmp_path / "kiosk.db"
    cipher = TemplateCipher.from_file(tmp_path / "template.key")
    private_database(path)
    old = sqlite_utils.Database(sqlite3.connect(str(path), isolation_level=None))
    migrations.apply(old, stop_before="0006_door_templates")
    assert "door_visit" not in old["templates"].columns_dict
    GalleryStore(old, cipher).enroll(Resident("r-hu", "Hu"), [(faces[HU][0], "photo-0"), (faces[HU][1], "photo-1")])
    old.conn.close()

    db = open_database(path)
    try:
        assert "door_visit" in db["templates"].columns_dict
        indexes = {r[1]: (r[2], r[4]) for r in db.execute("PRAGMA index_list(templates)")}
        assert indexes.get("templates_door_visit") == (1, 1), "unique, and partial (only door templates)"
        store = GalleryStore(db, cipher)
        t = store.templates_of("r-hu")
        assert len(t.enrolled) == 2 and t.door == [], "the templates there before are enrolled ones"
        assert store.door_templates() == []
        assert store.admit_door_template("r-hu", faces[HU][2], VISITS[0], AdaptPolicy(ANCHOR), now=T0).admitted
        # One door template per visit, whatever writes the rows; enrolled ones (no visit) are many.
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO templates(resident_id, vector, created_at, door_visit) VALUES (?,?,?,?)",
                       ["r-hu", b"x" * 64, T0, VISITS[0]])
        store.add_template("r-hu", faces[HU][3], "photo-3")
        assert len(store.templates_of("r-hu").enrolled) == 3
    finally:
        db.close()
    # Opened again: nothing more to apply.
    db = open_database(path)
    try:
        assert [m.name for m in migrations.pending(db)] == []
        assert GalleryStore(db, cipher).door_templates() == [("r-hu", VISITS[0], T0)]
    finally:
        db.close()
