"""The doors' proposals on the console (Flask's test client, SQLite and PostgreSQL): door templates listed,
approved by hand and by the policy, rejected, listed as held and revoked; an enrollment at the door approved;
a viewer changes nothing; every decision in the audit log.

The proposals take the real path (harness.door_kit.ProposingDoor: the door's proposer after a check-in its outbox
committed, sealed to the back end, verified and stored as kiosk-ingest does), with real faces: r-hu is enrolled
from one photo of Hu Jintao, and seen at the door in others; a photo of Wen Jiabao, a look-alike the door's
candidate rule takes for r-hu but the console's anchor does not, comes with r-hu's stolen code."""

from __future__ import annotations

import pytest

from conftest import HU, WEN
from console_kit import ADMIN, VIEWER, login, proposing_console, token
from kiosk.backend.proposals import APPROVED, PENDING, REJECTED, proposals
from kiosk.enrollment.invitation import issue_invitation, read_invitation
from kiosk.enrollment.proposal import new_proposal, seal_proposal
from kiosk.match.models import MODEL_ID
from kiosk.sync import keys as keymod

SITE = "elm-court"


@pytest.fixture
def site(tmp_path, store_url, faces):
    console, app, admin, door = proposing_console(tmp_path, store_url, faces, SITE)
    yield console, app, admin, door
    door.close()
    console.close()


def post(client, page: str, action: str):
    return client.post(action, data={"csrf_token": token(client.get(page).get_data(as_text=True))})


def test_door_templates_approved_rejected_and_revoked_on_the_console(site, faces):
    console, app, admin, door = site
    hu, wen = faces[HU], faces[WEN]
    own = door.visit("r-hu", hu[1])
    stolen = door.visit("r-hu", wen[2])
    third = door.visit("r-hu", hu[3])
    door.deliver(console.store)
    c = app.test_client()
    login(c, ADMIN)
    page = c.get("/proposals/").get_data(as_text=True)
    assert all(v in page for v in (own, stolen, third)) and "door template (face+qr" in page and "r-hu" in page
    assert "3 pending" in page

    # One approved by hand: stored as the resident's door template.
    r = post(c, "/proposals/", f"/proposals/{own}/approve")
    assert r.status_code == 302
    assert console.residents.gallery.door_templates() == [("r-hu", own, pytest.approx(
        console.residents.gallery.door_templates()[0][2]))]
    # The rest by the policy: the look-alike's face is not anchored on r-hu's enrolled photo, and is rejected.
    r = post(c, "/proposals/", "/proposals/auto")
    assert r.status_code == 302
    status = {p["invitation"]: (p["status"], p["note"]) for p in proposals(console.store, status=None)}
    assert status[own] == (APPROVED, None) and status[third] == (APPROVED, None)
    assert status[stolen][0] == REJECTED and status[stolen][1].startswith("not_anchored")
    assert [v for _, v, _ in console.residents.gallery.door_templates()] == [own, third]
    assert "Nothing pending." in c.get("/proposals/").get_data(as_text=True)

    # Listed as held, and revoked.
    page = c.get("/proposals/door-templates").get_data(as_text=True)
    assert own in page and third in page and "Hu" in page
    r = post(c, "/proposals/door-templates", f"/proposals/door-templates/{own}/revoke")
    assert r.status_code == 302
    assert [v for _, v, _ in console.residents.gallery.door_templates()] == [third]
    assert post(c, "/proposals/door-templates", f"/proposals/door-templates/{own}/revoke").status_code == 404

    # Every decision is in the audit log: who, what, whose.
    actions = [(a["actor"], a["action"], a["target"]) for a in console.accounts.audit_log()]
    assert (ADMIN, "door_template.revoke", "r-hu") in actions
    assert sum(a == (ADMIN, "proposal.door_template", "r-hu") for a in actions) == 3


def test_a_viewer_approves_and_revokes_nothing_and_a_post_needs_its_token(site, faces):
    console, app, admin, door = site
    visit = door.visit("r-hu", faces[HU][1])
    door.deliver(console.store)
    c = app.test_client()
    login(c, VIEWER)
    page = c.get("/proposals/").get_data(as_text=True)
    assert visit in page and "Approve" not in page and "Decide every" not in page
    assert post(c, "/proposals/", f"/proposals/{visit}/approve").status_code == 403
    assert post(c, "/proposals/", "/proposals/auto").status_code == 403
    assert post(c, "/proposals/", f"/proposals/{visit}/reject").status_code == 403
    assert [p["status"] for p in proposals(console.store)] == [PENDING]
    admin_client = app.test_client()
    login(admin_client, ADMIN)
    assert admin_client.post(f"/proposals/{visit}/approve", data={}).status_code == 400  # no CSRF token
    assert [p["status"] for p in proposals(console.store)] == [PENDING]
    assert console.residents.gallery.door_templates() == []


def test_an_enrollment_at_the_door_is_approved_on_the_console(site, faces):
    console, app, admin, door = site
    inv = read_invitation(issue_invitation(admin, "r-new", SITE, name="Newcomer"), admin.public())
    claims = new_proposal(invitation=inv, site=SITE, device="door-1", descriptors=list(faces[WEN][:3]),
                          model_id=MODEL_ID, frames=9)
    door.commit_proposal("r-new", proposal=seal_proposal(claims, door.keys, admin.public()), invitation=inv.nonce,
                         proposal_kind="enrollment")
    door.deliver(console.store)
    c = app.test_client()
    login(c, ADMIN)
    page = c.get("/proposals/").get_data(as_text=True)
    assert inv.nonce in page and "enrollment" in page and "r-new" in page
    # The policy decides door templates only: an enrollment waits for a person.
    post(c, "/proposals/", "/proposals/auto")
    assert [p["status"] for p in proposals(console.store)] == [PENDING]
    assert post(c, "/proposals/", f"/proposals/{inv.nonce}/approve").status_code == 302
    r = console.residents.get("r-new")
    assert r is not None and r.name == "Newcomer" and r.templates == 3
    assert [p["status"] for p in proposals(console.store, status=None)] == [APPROVED]


def test_an_enrollment_for_a_resident_erased_since_is_rejected_and_the_audit_says_so(site, faces):
    """The resident was erased after the invitation was issued: approving their door enrollment rejects it there and
    then (its descriptors are deleted), and the audit log keeps that decision as it keeps the admin's own."""
    console, app, admin, door = site
    inv = read_invitation(issue_invitation(admin, "r-new", SITE, name="Newcomer"), admin.public())
    claims = new_proposal(invitation=inv, site=SITE, device="door-1", descriptors=list(faces[WEN][:3]),
                          model_id=MODEL_ID, frames=9)
    console.store.erase_resident("r-new")
    door.commit_proposal("r-new", proposal=seal_proposal(claims, door.keys, admin.public()), invitation=inv.nonce,
                         proposal_kind="enrollment")
    door.deliver(console.store)
    c = app.test_client()
    login(c, ADMIN)
    r = post(c, "/proposals/", f"/proposals/{inv.nonce}/approve")
    assert r.status_code == 302
    assert "it was rejected" in c.get("/proposals/").get_data(as_text=True)
    [row] = proposals(console.store, status=None)
    assert row["status"] == REJECTED and console.residents.get("r-new") is None
    [entry] = [a for a in console.accounts.audit_log() if a["action"] == "proposal.enrollment"]
    assert (entry["actor"], entry["target"]) == (ADMIN, "r-new") and "rejected: erased" in entry["detail"]
