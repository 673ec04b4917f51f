"""The door's proposal: sealed by the door to the admin, opened and checked by the admin only; a new input
from the field, fuzzed like the other formats."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.gallery_kit import refused_quietly, vectors
from kiosk.enrollment.invitation import issue_invitation, read_invitation
from kiosk.enrollment.proposal import check_proposal, new_proposal, open_proposal, seal_proposal
from kiosk.errors import EnvelopeError
from kiosk.match.decide import Outcome
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import seal
from kiosk.sync.events.format import PROPOSAL_EVENT, check_claims

SITE = "block-7"


@pytest.fixture(scope="module")
def parties():
    return keymod.generate("admin"), keymod.generate(f"{SITE}/door-1"), keymod.generate(f"{SITE}/door-2")


def claims_for(admin, door="door-1", resident="r-1", site=SITE, n=3, **kw):
    inv = read_invitation(issue_invitation(admin, resident, site, name="Ada"), admin.public())
    return new_proposal(invitation=inv, site=SITE, device=door, descriptors=vectors(np.random.default_rng(1), n),
                        model_id="dlib-resnet-v1/hog", frames=9, liveness={"blink": 0.5}, **kw), inv


def reason(fn, *args, **kw) -> str:
    with pytest.raises(EnvelopeError) as e:
        fn(*args, **kw)
    return e.value.reason


def test_the_admin_opens_what_a_door_proposed(parties):
    admin, door, _ = parties
    claims, inv = claims_for(admin)
    sealed = seal_proposal(claims, door, admin.public())
    p = open_proposal(sealed, admin, keymod.KeyRing([door.public()]), invitation_id=inv.nonce)
    assert p.signer == f"{SITE}/door-1" and p.resident_id == "r-1" and len(p.templates) == 3
    assert np.allclose(p.templates[0], vectors(np.random.default_rng(1), 1)[0])
    assert Outcome.ENROLL_PROPOSED.event_type == PROPOSAL_EVENT


def test_nobody_else_opens_it_and_the_back_end_can_file_it(parties):
    admin, door, _ = parties
    claims, inv = claims_for(admin)
    sealed = seal_proposal(claims, door, admin.public())
    backend = keymod.generate("backend")
    assert reason(open_proposal, sealed, backend, keymod.KeyRing([door.public()])) == "wrong_recipient"
    event = {"event_id": "e-1", "seq": 1, "site": SITE, "device": "door-1", "type": PROPOSAL_EVENT,
             "time": time.time(), "proposal": sealed, "invitation": inv.nonce, "proposal_kind": "enrollment"}
    assert check_claims(event) is event


def test_what_the_admin_refuses(parties):
    admin, door, door2 = parties
    ring = keymod.KeyRing([door.public(), door2.public()])
    claims, inv = claims_for(admin)
    # Another door signs a proposal naming door-1.
    assert reason(open_proposal, seal_proposal(claims, door2, admin.public()), admin, ring) == "wrong_door"
    # An unknown door.
    assert reason(open_proposal, seal_proposal(claims, keymod.generate(f"{SITE}/door-9"), admin.public()), admin,
                  ring) == "unknown_signer"
    # An invitation the admin never signed (a door's key stolen, a proposal for anyone).
    forged, _ = claims_for(keymod.generate("admin"))
    assert reason(open_proposal, seal_proposal(forged, door, admin.public()), admin, ring) == "bad_invitation"
    # The invitation of another resident, or filed under another invitation.
    other = dict(claims, resident_id="r-2")
    assert reason(open_proposal, seal_proposal(other, door, admin.public()), admin, ring) == "bad_invitation"
    sealed = seal_proposal(claims, door, admin.public())
    assert reason(open_proposal, sealed, admin, ring, invitation_id="x" * 22) == "bad_invitation"
    # Made after the invitation expired.
    late = dict(claims, time=inv.expires_at + 3600.0)
    assert reason(open_proposal, seal_proposal(late, door, admin.public()), admin, ring) == "bad_invitation"
    # An event's typ is not a proposal's.
    assert reason(open_proposal, seal(claims, door, admin.public().encryption), admin, ring) == "wrong_type"


MUTATIONS = st.sampled_from(["drop", "null", "string", "number", "list", "huge", "nan"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["v", "kind", "site", "device", "invitation", "resident_id", "name", "templates",
                              "model_id", "time", "frames", "liveness", "extra"]),
       how=MUTATIONS, junk=st.one_of(st.text(max_size=80), st.binary(max_size=600).map(lambda b: b.hex())))
def test_mutated_claims_are_refused_or_still_sound(parties, field, how, junk):
    admin, _, _ = parties
    claims, _ = _good(admin)
    c = copy.deepcopy(claims)
    if how == "drop":
        c.pop(field, None)
    elif how == "null":
        c[field] = None
    elif how == "string":
        c[field] = junk
    elif how == "number":
        c[field] = len(junk) * 1e300
    elif how == "list":
        c[field] = [junk] * 9
    elif how == "huge":
        c[field] = junk * 2000
    else:
        c[field] = float("nan")
    if refused_quietly(check_proposal, c, junk):
        return
    # Accepted: then every field is still what the format promises.
    assert c["kind"] == "enrollment" and 1 <= len(c["templates"]) <= 8 and isinstance(c["resident_id"], str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_sealed_proposal_cut_or_flipped_is_refused(parties, data):
    admin, door, _ = parties
    claims, inv = _good(admin)
    sealed = _sealed(admin, door)
    i = data.draw(st.integers(0, len(sealed) - 1))
    kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if kind == "flip":
        ch = data.draw(st.sampled_from("AQgw_-.x"))
        bad = sealed[:i] + ch + sealed[i + 1:]
    elif kind == "cut":
        bad = sealed[:i]
    else:
        bad = sealed[:i] + data.draw(st.text(min_size=1, max_size=8)) + sealed[i:]
    if bad == sealed:
        return
    try:
        p = open_proposal(bad, admin, keymod.KeyRing([door.public()]), invitation_id=inv.nonce)
    except EnvelopeError as e:
        assert e.reason
        return
    # Base64 has slack in its last character: what opens is the proposal itself.
    assert p.claims == claims


_cache: dict = {}


def _good(admin):
    if "claims" not in _cache:
        _cache["claims"] = claims_for(admin)
    return _cache["claims"]


def _sealed(admin, door):
    if "sealed" not in _cache:
        _cache["sealed"] = seal_proposal(_good(admin)[0], door, admin.public())
    return _cache["sealed"]
