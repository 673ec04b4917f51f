"""``kiosk-admin gallery review`` on the back end's store (SQLite and PostgreSQL): what it lists, what it
refuses to approve, approval into the admin's enrollment database, rejection."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.gallery_kit import vectors
from kiosk.admin import main as admin_main
from kiosk.backend.proposals import APPROVED, REJECTED, proposals
from kiosk.backend.store import Incoming, open_store as open_backend_store
from kiosk.config import parse_config
from kiosk.enrollment.invitation import issue_invitation, read_invitation
from kiosk.enrollment.proposal import new_proposal, seal_proposal
from kiosk.gallery.store import open_store
from kiosk.match.models import MODEL_ID
from kiosk.sync import keys as keymod
from kiosk.sync.events.format import PROPOSAL_EVENT

SITE = "elm-court"


@pytest.fixture
def site(tmp_path, store_url):
    admin, door = keymod.generate("admin"), keymod.generate(f"{SITE}/door-1")
    keymod.save_private(tmp_path / "admin.jwks", admin)
    keymod.save_public(tmp_path / "door-1.pub.jwks", door)
    (tmp_path / "admin.toml").write_text(f'[device]\nsite = "{SITE}"\nstate_dir = "{tmp_path / "state"}"\n')
    store = open_backend_store(store_url)
    yield admin, door, store, tmp_path
    store.close()


def file(store, admin, door, resident, *, signer=None, seq=1, name="Ada", issued=None, named=None, door_says=None):
    """A door's proposal for a new invitation of ``signer`` (default: the admin), filed as kiosk-ingest does
    (``named``: the resident the event names, when not the invitation's; ``door_says``: the name the door puts in
    its proposal, when not the invitation's)."""
    inv = read_invitation(issue_invitation(signer or admin, resident, SITE, name=name, now=issued),
                          (signer or admin).public())
    claims = new_proposal(invitation=inv, site=SITE, device="door-1", descriptors=vectors(np.random.default_rng(seq), 3),
                          model_id=MODEL_ID, frames=12)
    if door_says is not None:
        claims["name"] = door_says
    event = {"event_id": f"e-{seq}", "seq": seq, "site": SITE, "device": "door-1", "type": PROPOSAL_EVENT,
             "time": time.time(), "v": 1, "proposal": seal_proposal(claims, door, admin.public()),
             "invitation": inv.nonce, "proposal_kind": "enrollment", "resident_id": named or resident}
    assert store.store_batch([Incoming(event, time.time())]).stored == 1
    return inv.nonce


def review(capsys, root, url, *args):
    status = admin_main(["--config", str(root / "admin.toml"), "gallery", "review", "--key", str(root / "admin.jwks"),
                         "--store", url, "--devices", str(root / "door-1.pub.jwks"), *map(str, args)])
    out = capsys.readouterr()
    return status, out.out + out.err


def residents(root):
    store = open_store(parse_config(f'[device]\nsite = "{SITE}"\nstate_dir = "{root / "state"}"\n'))
    try:
        return {rid: len(store.db.execute("SELECT 1 FROM templates WHERE resident_id = ?", [rid]).fetchall())
                for rid in store.residents()}
    finally:
        store.db.close()


def test_review_lists_approves_refuses_and_rejects(site, store_url, capsys):
    admin, door, store, root = site
    good = file(store, admin, door, "r-1", seq=1)
    forged = file(store, admin, door, "r-2", signer=keymod.generate("admin"), seq=2)
    status, out = review(capsys, root, store_url)
    assert status == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert "r-1" in lines[good] and "3" in lines[good].split() and "NOT VALID" not in lines[good]
    assert "NOT VALID: bad_invitation" in lines[forged] and "r-2" not in lines[forged]
    # A forged invitation inside: never approved, nothing enrolled.
    status, out = review(capsys, root, store_url, "--approve", forged, "--no-publish")
    assert status == 1 and "cannot be approved" in out
    assert residents(root) == {}
    # The good one, by a unique start of its id: into the admin's database, published later.
    status, out = review(capsys, root, store_url, "--approve", good[:8], "--no-publish")
    assert status == 0 and "approved, 3 template(s)" in out, out
    assert residents(root) == {"r-1": 3}
    status, out = review(capsys, root, store_url, "--approve", good, "--no-publish")
    assert status == 1 and "no pending proposal" in out, "approved once"
    status, out = review(capsys, root, store_url, "--reject", forged)
    assert status == 0
    assert {r["invitation"]: r["status"] for r in proposals(store, status=None)} == {good: APPROVED,
                                                                                     forged: REJECTED}
    assert residents(root) == {"r-1": 3}
    status, out = review(capsys, root, store_url)
    assert status == 0 and "no pending proposals" in out


def test_approval_refuses_a_resident_erased_since_the_invitation(site, store_url, capsys):
    """Erasure deletes a resident's pending proposals; one filed after it, for an invitation issued before it
    (a door that enrolled them meanwhile), or filed under another resident, is never approved."""
    admin, door, store, root = site
    before = file(store, admin, door, "r-1", seq=1)
    store.erase_resident("r-1", now=time.time() - 30)
    assert [r["invitation"] for r in proposals(store, status=None)] == []
    status, out = review(capsys, root, store_url, "--approve", before, "--no-publish")
    assert status == 1 and "no pending proposal" in out
    # Issued before the erasure, made and filed after it.
    late = file(store, admin, door, "r-1", seq=2, issued=time.time() - 60)
    lying = file(store, admin, door, "r-3", seq=3, named="r-4")  # a door naming another resident
    status, out = review(capsys, root, store_url)
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert "NOT VALID: erased" in lines[late] and lines[late].split()[2] == "?", "whose, not shown"
    assert "NOT VALID: wrong_resident" in lines[lying]
    status, out = review(capsys, root, store_url, "--approve", late, "--no-publish")
    assert status == 1 and "erased after the invitation was issued" in out
    status, out = review(capsys, root, store_url, "--approve", lying, "--no-publish")
    assert status == 1 and "filed under another resident" in out
    assert residents(root) == {}
    # Refused, they are rejected: the sealed descriptors go from the store.
    assert {r["invitation"]: (r["status"], r["proposal"]) for r in proposals(store, status=None)} == {
        late: (REJECTED, ""), lying: (REJECTED, "")}
    # An invitation issued after the erasure enrolls the resident again.
    again = file(store, admin, door, "r-1", seq=4)
    status, out = review(capsys, root, store_url, "--approve", again, "--no-publish")
    assert status == 0 and residents(root) == {"r-1": 3}


def test_the_name_approved_is_the_invitations_not_the_doors(site, store_url, capsys):
    """A door (its key stolen) wrote its own name into a proposal: approval took it over the admin-signed
    invitation's. One with a control character, once stored, stopped every later gallery update of the site."""
    admin, door, store, root = site
    renamed = file(store, admin, door, "r-1", seq=1, door_says="Mallory")
    control = file(store, admin, door, "r-2", seq=2, door_says="Eve\x1b]8;;\x07")
    status, out = review(capsys, root, store_url)
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert "NOT VALID" in lines[control] and "NOT VALID" not in lines[renamed], out
    status, out = review(capsys, root, store_url, "--approve", renamed, "--no-publish")
    assert status == 0, out
    store_ = open_store(parse_config(f'[device]\nsite = "{SITE}"\nstate_dir = "{root / "state"}"\n'))
    try:
        assert {rid: r.name for rid, r in store_.residents().items()} == {"r-1": "Ada"}
    finally:
        store_.db.close()
    status, out = review(capsys, root, store_url, "--approve", control, "--no-publish")
    assert status == 1 and "cannot be approved" in out
