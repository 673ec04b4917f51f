"""``kiosk-admin gallery review`` of door templates, and ``gallery door-templates``, on the back end's store
(SQLite and PostgreSQL): listed, approved by hand and by policy (``--auto``), refused when not valid, revoked.

The proposals take the real path: the door's proposer (kiosk.enrollment.door_templates) after a check-in its outbox
committed, the event sealed to the back end as the publisher seals it, verified and stored as kiosk-ingest
does. The faces are real (shared LFW development photos): r-hu is enrolled at the admin from one photo of Hu
Jintao and seen at the door in others; a photo of Wen Jiabao, a look-alike within the door's candidate rule
but not within the admin's anchor, comes with r-hu's stolen code."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import HU, WEN
from harness.door_kit import ProposingDoor
from kiosk.admin import main as admin_main
from kiosk.backend.proposals import APPROVED, PENDING, REJECTED, proposals
from kiosk.backend.store import open_store as open_backend_store
from kiosk.config import parse_config
from kiosk.enrollment.invitation import issue_invitation, read_invitation
from kiosk.enrollment.proposal import DOOR_TEMPLATE, new_door_template, new_proposal, seal_proposal
from kiosk.gallery.store import Gallery, Resident, open_store
from kiosk.match.calibration import operating_point
from kiosk.match.decide import OperatingPoint
from kiosk.match.models import MODEL_ID
from kiosk.sync import keys as keymod

SITE = "elm-court"
POINT = OperatingPoint(threshold=0.40, margin=0.05, visit_threshold=0.38)


@pytest.fixture
def site(tmp_path, store_url, faces):
    """The admin (key, config, enrollment database holding r-hu), door-1 and door-2 (public keys in the admin's
    devices folder; their galleries hold r-hu and r-wen), and the back end's store."""
    admin, backend = keymod.generate("admin"), keymod.generate(keymod.BACKEND)
    keymod.save_private(tmp_path / "admin.jwks", admin)
    (tmp_path / "admin.toml").write_text(f'[device]\nsite = "{SITE}"\nstate_dir = "{tmp_path / "state"}"\n')
    gallery = Gallery({"r-hu": Resident("r-hu", "Hu"), "r-wen": Resident("r-wen", "Wen")}, ["r-hu", "r-wen"],
                      np.vstack([faces[HU][0], faces[WEN][0]]))
    doors = [ProposingDoor(tmp_path / name, name, admin, backend, gallery, SITE, POINT) for name in ("door-1", "door-2")]
    for d in doors:
        keymod.save_public(tmp_path / f"{d.name}.pub.jwks", d.keys)
    held = admin_store(tmp_path)
    held.enroll(Resident("r-hu", "Hu"), [(faces[HU][0], "photo-0")])
    held.db.close()
    store = open_backend_store(store_url)
    yield admin, doors, store, tmp_path
    store.close()
    for d in doors:
        d.close()


def admin_store(root):
    return open_store(parse_config(f'[device]\nsite = "{SITE}"\nstate_dir = "{root / "state"}"\n'))


def held(root) -> list[tuple[str, str]]:
    """The admin's door templates, as (resident, visit)."""
    store = admin_store(root)
    try:
        return [(rid, visit) for rid, visit, _ in store.door_templates()]
    finally:
        store.db.close()


def kiosk_admin(capsys, root, *args):
    status = admin_main(["--config", str(root / "admin.toml"), "gallery", *map(str, args)])
    out = capsys.readouterr()
    return status, out.out + out.err


def review(capsys, root, url, *args):
    return kiosk_admin(capsys, root, "review", "--key", root / "admin.jwks", "--store", url, "--devices",
                 root / "door-1.pub.jwks", root / "door-2.pub.jwks", *args)


def lines_by_id(out: str) -> dict[str, str]:
    return {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln.strip()}


def statuses(store) -> dict[str, tuple[str, str | None]]:
    return {r["invitation"]: (r["status"], r["note"]) for r in proposals(store, status=None)}


def test_listed_approved_by_hand_then_listed_and_revoked(site, store_url, faces, capsys):
    _, (door, _), store, root = site
    visit = door.visit("r-hu", faces[HU][1])
    door.deliver(store)
    [row] = proposals(store)
    assert (row["invitation"], row["kind"], row["device"], row["status"]) == (visit, DOOR_TEMPLATE, "door-1", PENDING)
    status, out = review(capsys, root, store_url)
    assert status == 0, out
    line = lines_by_id(out)[visit]
    assert "door template (face+qr" in line and "r-hu" in line and "NOT VALID" not in line, out
    assert held(root) == []

    status, out = review(capsys, root, store_url, "--approve", visit, "--no-publish")
    assert status == 0 and f"door template {visit}: approved" in out, out
    assert statuses(store) == {visit: (APPROVED, None)}
    assert held(root) == [("r-hu", visit)]
    store_ = admin_store(root)
    try:
        [template] = store_.templates_of("r-hu").door
        assert template.source == visit and np.array_equal(template.vector, faces[HU][1])
    finally:
        store_.db.close()
    status, out = review(capsys, root, store_url, "--approve", visit, "--no-publish")
    assert status == 1 and "no pending proposal" in out, "approved once"

    # gallery door-templates: listed, revoked, gone.
    status, out = kiosk_admin(capsys, root, "door-templates")
    assert status == 0 and "r-hu" in lines_by_id(out) and visit in lines_by_id(out)["r-hu"], out
    status, out = kiosk_admin(capsys, root, "door-templates", "--resident", "r-wen")
    assert status == 0 and "no door templates" in out
    status, out = kiosk_admin(capsys, root, "door-templates", "--revoke", "0190f3a2-0000-7000-8000-000000000000",
                        "--no-publish")
    assert status == 1 and "no door template from visit" in out
    assert held(root) == [("r-hu", visit)]
    status, out = kiosk_admin(capsys, root, "door-templates", "--revoke", visit, "--no-publish")
    assert status == 0 and f"door template {visit}: revoked (resident r-hu)" in out, out
    assert held(root) == []
    status, out = kiosk_admin(capsys, root, "door-templates")
    assert status == 0 and "no door templates" in out


def test_revoking_without_a_way_to_publish_is_a_usage_error(site, store_url, faces, capsys):
    _, (door, _), store, root = site
    visit = door.visit("r-hu", faces[HU][1])
    door.deliver(store)
    assert review(capsys, root, store_url, "--approve", visit, "--no-publish")[0] == 0
    status, out = kiosk_admin(capsys, root, "door-templates", "--revoke", visit)
    assert status == 2 and "--key ADMIN_KEY" in out and "--no-publish" in out, out


def test_a_usage_error_revokes_nothing(site, store_url, faces, capsys):
    _, (door, _), store, root = site
    visit = door.visit("r-hu", faces[HU][1])
    door.deliver(store)
    assert review(capsys, root, store_url, "--approve", visit, "--no-publish")[0] == 0
    assert kiosk_admin(capsys, root, "door-templates", "--revoke", visit)[0] == 2
    assert held(root) == [("r-hu", visit)], "told to give --key, the admin runs it again: it must still be there"


def test_auto_admits_what_the_policy_allows_and_rejects_the_rest_with_why(site, store_url, faces, capsys):
    admin_keys, (door, _), store, root = site
    hu, wen = faces[HU], faces[WEN]
    anchor = operating_point(parse_config(f'[device]\nsite = "{SITE}"\n').match, 1).threshold
    dist = np.linalg.norm
    # The door is sure of the look-alike with r-hu's code (within its candidate rule, 0.45), the admin's anchor not.
    assert dist(hu[1] - hu[0]) <= anchor < dist(wen[2] - hu[0]) <= 0.45
    own = door.visit("r-hu", hu[1])
    stolen = door.visit("r-hu", wen[2])
    unknown = door.visit("r-wen", wen[1])  # a resident of the door's gallery the admin's database does not hold
    inv = read_invitation(issue_invitation(admin_keys, "r-new", SITE, name="New"), admin_keys.public())
    enrollment = new_proposal(invitation=inv, site=SITE, device="door-1", descriptors=[hu[2]], model_id=MODEL_ID,
                              frames=6)
    door.commit_proposal("r-new", proposal=seal_proposal(enrollment, door.keys, admin_keys.public()),
                         invitation=inv.nonce, proposal_kind="enrollment")
    door.deliver(store)
    assert {r["invitation"]: r["kind"] for r in proposals(store)} == {
        own: DOOR_TEMPLATE, stolen: DOOR_TEMPLATE, unknown: DOOR_TEMPLATE, inv.nonce: "enrollment"}

    status, out = review(capsys, root, store_url, "--auto", "--no-publish")
    assert status == 0, out
    assert "1 of 3 door template(s) approved" in out, out
    assert f"door template {own}: approved" in out
    assert f"door template {stolen}: rejected: not_anchored" in out
    got = statuses(store)
    assert got[own] == (APPROVED, None)
    assert got[stolen][0] == REJECTED and got[stolen][1].startswith("not_anchored"), got[stolen]
    assert got[unknown][0] == REJECTED and got[unknown][1].startswith("unknown_resident"), got[unknown]
    assert got[inv.nonce] == (PENDING, None), "an enrollment waits for a person"
    assert held(root) == [("r-hu", own)]
    # Decided, a door template is not decided again; the enrollment still waits.
    status, out = review(capsys, root, store_url, "--auto", "--no-publish")
    assert status == 0 and "no pending door templates" in out
    status, out = review(capsys, root, store_url)
    assert list(lines_by_id(out)) == [inv.nonce] and "enrollment" in out


def test_auto_takes_the_policy_options(site, store_url, faces, capsys):
    _, (door, _), store, root = site
    hu, wen = faces[HU], faces[WEN]
    door.visit("r-hu", hu[1]), door.visit("r-hu", hu[2])
    stolen = door.visit("r-hu", wen[2])
    door.deliver(store)
    # A looser anchor lets the look-alike in; one door template kept: each replaces the one before.
    status, out = review(capsys, root, store_url, "--auto", "--no-publish", "--anchor", "0.5",
                         "--max-door-templates", "1")
    assert status == 0 and "3 of 3 door template(s) approved" in out, out
    assert held(root) == [("r-hu", stolen)]
    # Novelty: a face nearer than --novelty to one held adds nothing.
    near = door.visit("r-hu", hu[1] + np.float32(0.002))
    door.deliver(store)
    status, out = review(capsys, root, store_url, "--auto", "--no-publish", "--anchor", "0.5", "--novelty", "0.9")
    assert status == 0 and "0 of 1 door template(s) approved" in out, out
    assert statuses(store)[near][1].startswith("nothing_new")


def test_what_is_not_valid_is_rejected(site, store_url, faces, capsys):
    admin_keys, (door1, door2), store, root = site
    hu = faces[HU]

    def claims(device, visit, face):
        return new_door_template(site=SITE, device=device, visit=visit, resident_id="r-hu", descriptors=[face],
                                 model_id=MODEL_ID, frames=6, method="face+qr", distance=0.33)

    # Sealed by door-2, naming door-1, sent by door-1.
    v1 = door1.checkin("r-hu")
    door1.commit_proposal("r-hu", proposal=seal_proposal(claims("door-1", v1, hu[1]), door2.keys, admin_keys.public()),
                          visit=v1, proposal_kind=DOOR_TEMPLATE)
    # Sealed by door-1 for one visit, filed under another.
    v2, v3 = door1.checkin("r-hu"), door1.checkin("r-hu")
    door1.commit_proposal("r-hu", proposal=seal_proposal(claims("door-1", v2, hu[2]), door1.keys, admin_keys.public()),
                          visit=v3, proposal_kind=DOOR_TEMPLATE)
    # door-2's own proposal, sent on by door-1.
    v4 = door2.checkin("r-hu")
    door1.commit_proposal("r-hu", proposal=seal_proposal(claims("door-2", v4, hu[3]), door2.keys, admin_keys.public()),
                          visit=v4, proposal_kind=DOOR_TEMPLATE)
    door1.deliver(store)
    assert set(r["invitation"] for r in proposals(store)) == {v1, v3, v4}

    status, out = review(capsys, root, store_url)
    lines = lines_by_id(out)
    assert "NOT VALID: wrong_door" in lines[v1] and "NOT VALID: wrong_visit" in lines[v3], out
    status, out = review(capsys, root, store_url, "--approve", v1, "--no-publish")
    assert status == 1 and "rejected: not_valid (wrong_door)" in out, out
    status, out = review(capsys, root, store_url, "--auto", "--no-publish")
    assert status == 0 and "0 of 2 door template(s) approved" in out, out
    got = statuses(store)
    assert got[v1] == (REJECTED, "not_valid (wrong_door)")
    assert got[v3] == (REJECTED, "not_valid (wrong_visit)")
    assert got[v4][0] == REJECTED and got[v4][1].startswith("not_valid"), got[v4]
    assert held(root) == []
    assert all(r["proposal"] == "" for r in proposals(store, status=None)), "nothing sealed is kept once decided"


class SomeoneElseMeanwhile:
    """The admin's gallery store, with another admin (the console, a second CLI) deciding the proposal at the worst
    moment: after this decision checked that it was pending, before it marks it decided."""

    def __init__(self, store, backend, key: str):
        self.store, self.backend, self.key = store, backend, key

    def __getattr__(self, name):
        return getattr(self.store, name)

    def admit_door_template(self, *args, **kw):
        from kiosk.backend.proposals import decide

        assert decide(self.backend, self.key, REJECTED, note="rejected by the other admin")
        return self.store.admit_door_template(*args, **kw)

    def enroll(self, *args, **kw):
        from kiosk.backend.proposals import decide

        assert decide(self.backend, self.key, REJECTED, note="rejected by the other admin")
        return self.store.enroll(*args, **kw)


def test_a_proposal_decided_meanwhile_by_someone_else_changes_nothing(site, store_url, faces):
    """Two admins at once: the one who comes second is told, and the admin's database is as it was, with the door
    template a full resident's new one replaced put back, and an enrollment's resident taken out again."""
    from kiosk import review as rv
    from kiosk.gallery.adapt import AdaptPolicy

    admin_keys, (door, _), store, root = site
    ring = keymod.KeyRing([door.keys.public()])
    hu = faces[HU]
    policy = AdaptPolicy(anchor=0.45, max_door_templates=1, novelty=0.0)
    first, second, third = (door.visit("r-hu", hu[i]) for i in (1, 2, 3))
    inv = read_invitation(issue_invitation(admin_keys, "r-new", SITE, name="New"), admin_keys.public())
    enrollment = new_proposal(invitation=inv, site=SITE, device="door-1", descriptors=[hu[2]], model_id=MODEL_ID,
                              frames=6)
    door.commit_proposal("r-new", proposal=seal_proposal(enrollment, door.keys, admin_keys.public()),
                         invitation=inv.nonce, proposal_kind="enrollment")
    again = read_invitation(issue_invitation(admin_keys, "r-hu", SITE, name="Hu"), admin_keys.public())
    door.commit_proposal("r-hu", proposal=seal_proposal(
        new_proposal(invitation=again, site=SITE, device="door-1", descriptors=[hu[3]], model_id=MODEL_ID, frames=6),
        door.keys, admin_keys.public()), invitation=again.nonce, proposal_kind="enrollment")
    door.deliver(store)
    entries = {e.key: e for e in rv.pending(store, SITE, admin_keys, ring)}
    gallery = admin_store(root)
    try:
        assert rv.admit(gallery, policy, store, entries[first]) is None
        assert held(root) == [("r-hu", first)]
        # Decided before this decision began: it writes nothing at all.
        assert rv.reject(store, entries[second], note="rejected on the console")
        with pytest.raises(rv.AlreadyDecided):
            rv.admit(gallery, policy, store, entries[second])
        assert rv.auto(gallery, policy, store, [entries[second]]) == []
        # Decided while this one wrote: what it wrote is taken back, and the template it replaced put back.
        with pytest.raises(rv.AlreadyDecided, match="decided meanwhile by someone else"):
            rv.admit(SomeoneElseMeanwhile(gallery, store, third), policy, store, entries[third])
        [kept] = gallery.templates_of("r-hu").door
        assert kept.source == first and np.array_equal(kept.vector, hu[1])
        assert statuses(store)[third] == (REJECTED, "rejected by the other admin")
        # An enrollment the same way: the new resident is not left behind.
        with pytest.raises(rv.AlreadyDecided):
            rv.enroll(SomeoneElseMeanwhile(gallery, store, inv.nonce), store, entries[inv.nonce])
        assert "r-new" not in gallery.residents() and len(gallery.templates_of("r-hu").enrolled) == 1
        # And an enrolled resident keeps only what they had.
        with pytest.raises(rv.AlreadyDecided):
            rv.enroll(SomeoneElseMeanwhile(gallery, store, again.nonce), store, entries[again.nonce])
        [enrolled] = gallery.templates_of("r-hu").enrolled
        assert np.array_equal(enrolled, hu[0]) and "r-hu" in gallery.residents()
    finally:
        gallery.db.close()
