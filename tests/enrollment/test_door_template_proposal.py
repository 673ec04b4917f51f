"""A door template: a descriptor from a visit the door was sure of, sealed by the door to the admin like an
enrollment proposal, filed under that visit's event id; a new input from the field, fuzzed like the others."""

from __future__ import annotations

import base64
import copy
import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from joserfc import jwe as rfc_jwe
from joserfc import jws as rfc_jws

from harness.gallery_kit import refused_quietly, vectors
from kiosk.enrollment.invitation import RESIDENT, issue_invitation, read_invitation
from kiosk.enrollment.proposal import (MAX_DOOR_TEMPLATES, PROPOSAL_TYP, DoorTemplateClaims, Proposal,
                                       check_proposal, new_door_template, new_proposal, open_proposal,
                                       seal_proposal)
from kiosk.errors import EnvelopeError
from kiosk.sync import keys as keymod
from kiosk.sync.events.format import PROPOSAL_EVENT, check_claims

SITE = "block-7"
#: The check-in's event id (the outbox's uuid7, as text): what the back end files the proposal under.
VISIT = "0190f3a2-7c1e-7b3d-9a4f-2e8c5d6b1a90"
OTHER_VISIT = "0190f3a2-7c1e-7b3d-9a4f-2e8c5d6b1a91"


@pytest.fixture(scope="module")
def parties():
    return keymod.generate("admin"), keymod.generate(f"{SITE}/door-1"), keymod.generate(f"{SITE}/door-2")


def door_claims(door="door-1", n=1, method="face+qr", **kw):
    args = dict(site=SITE, device=door, visit=VISIT, resident_id="r-1",
                descriptors=vectors(np.random.default_rng(2), n), model_id="dlib-resnet-v1/hog", frames=6,
                method=method, distance=0.31, liveness={"blink": 0.5})
    args.update(kw)
    return new_door_template(**args)


def reason(fn, *args, **kw) -> str:
    with pytest.raises(EnvelopeError) as e:
        fn(*args, **kw)
    return e.value.reason


def forged(claims, door, admin_public) -> str:
    """Sealed as :func:`seal_proposal` does, but of any JSON, NaN included: what a stolen door key can send."""
    payload = json.dumps(claims, allow_nan=True).encode()
    inner = rfc_jws.serialize_compact({"alg": keymod.SIG_ALG, "kid": door.signing_kid, "typ": PROPOSAL_TYP},
                                      payload, door.signing, algorithms=[keymod.SIG_ALG])
    enc = keymod.public_key(admin_public.encryption)
    header = {"alg": keymod.KEY_ALG, "enc": keymod.CONTENT_ENC, "kid": enc.kid, "cty": "JWT"}
    return rfc_jwe.encrypt_compact(header, inner, enc, algorithms=[keymod.KEY_ALG, keymod.CONTENT_ENC])


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize("method", ["face+qr", "face"])
def test_the_admin_opens_what_a_door_learnt_at_a_visit(parties, method):
    admin, door, _ = parties
    descriptors = vectors(np.random.default_rng(2), 1)
    claims = door_claims(method=method, liveness={"blink": 0.5, "depth": float("nan")}, now=1_750_000_000.0)
    assert claims["liveness"] == {"blink": 0.5}, "a cue that did not score is left out"
    p = open_proposal(seal_proposal(claims, door, admin.public()), admin, keymod.KeyRing([door.public()]),
                      invitation_id=VISIT)
    assert p.claims == claims and p.claims["method"] == method and p.claims["time"] == 1_750_000_000.0
    assert p.kind == "door_template" and p.key == VISIT and p.invitation is None
    assert p.signer == f"{SITE}/door-1" and p.resident_id == "r-1"
    assert len(p.templates) == 1 and p.templates[0].dtype == np.float32
    assert np.array_equal(p.templates[0], descriptors[0])
    # As many templates as a door may send, and not filed under any visit yet.
    two = door_claims(n=MAX_DOOR_TEMPLATES, method=method)
    p = open_proposal(seal_proposal(two, door, admin.public()), admin, keymod.KeyRing([door.public()]))
    sent = vectors(np.random.default_rng(2), MAX_DOOR_TEMPLATES)
    assert all(np.array_equal(a, b) for a, b in zip(p.templates, sent, strict=True))


def test_what_the_admin_refuses(parties):
    admin, door, door2 = parties
    ring = keymod.KeyRing([door.public(), door2.public()])
    claims = door_claims()
    sealed = seal_proposal(claims, door, admin.public())
    # Filed by the back end under another visit.
    assert reason(open_proposal, sealed, admin, ring, invitation_id=OTHER_VISIT) == "wrong_visit"
    # Another door signs a template naming door-1.
    assert reason(open_proposal, seal_proposal(claims, door2, admin.public()), admin, ring,
                  invitation_id=VISIT) == "wrong_door"
    # Sealed to another admin's key: this admin cannot open it.
    with pytest.raises(EnvelopeError) as e:
        open_proposal(seal_proposal(claims, door, keymod.generate("admin").public()), admin, ring,
                      invitation_id=VISIT)
    assert e.value.reason


def test_claims_of_one_kind_do_not_pass_as_the_other(parties):
    admin, door, _ = parties
    ring = keymod.KeyRing([door.public()])
    inv = read_invitation(issue_invitation(admin, "r-1", SITE, name="Ada"), admin.public())
    enrollment = new_proposal(invitation=inv, site=SITE, device="door-1", descriptors=vectors(np.random.default_rng(1)),
                              model_id="dlib-resnet-v1/hog", frames=9)
    template = door_claims()
    mixed = [dict(enrollment, visit=VISIT),                      # an enrollment filed as a visit
             dict(template, invitation=inv.token),               # a door template carrying an invitation
             dict(template, kind="enrollment"),                  # a door template posing as an enrollment
             dict(enrollment, kind="door_template"),             # and the other way round
             {k: v for k, v in template.items() if k != "kind"},  # of no kind, or of one that is not a name
             dict(template, kind=None), dict(template, kind=["door_template"]), dict(template, kind="Door_Template")]
    for c in mixed:
        assert reason(check_proposal, c) == "bad_claims"
        assert reason(open_proposal, seal_proposal(c, door, admin.public()), admin, ring) == "bad_claims"


@pytest.mark.parametrize("change", [
    pytest.param(dict(descriptors=vectors(np.random.default_rng(3), MAX_DOOR_TEMPLATES + 1)), id="too-many"),
    pytest.param(dict(descriptors=[]), id="none"),
    pytest.param(dict(distance=-0.01), id="negative-distance"),
    pytest.param(dict(distance=float("nan")), id="nan-distance"),
    pytest.param(dict(distance=4.5), id="far-distance"),
    pytest.param(dict(method="qr"), id="qr"),
    pytest.param(dict(method="face+QR"), id="method-case"),
    pytest.param(dict(resident_id="r 1"), id="resident-space"),
    pytest.param(dict(resident_id=""), id="resident-empty"),
    pytest.param(dict(resident_id="r" * 65), id="resident-long"),
    pytest.param(dict(visit="0190f3a2"), id="visit-short"),
    pytest.param(dict(visit=VISIT[:8] + " " + VISIT[9:]), id="visit-space"),
    pytest.param(dict(frames=0), id="no-frames"),
])
def test_a_door_does_not_make_a_bad_template(change):
    assert reason(door_claims, **change) == "bad_claims"


def test_bad_templates_are_refused_when_opened(parties):
    admin, door, _ = parties
    ring = keymod.KeyRing([door.public()])
    good = door_claims()
    v = vectors(np.random.default_rng(4), 1)[0]
    nan, inf = v.copy(), v.copy()
    nan[7], inf[0] = np.nan, np.inf
    bad = [dict(good, templates=[b64(nan.astype("<f4").tobytes())]),
           dict(good, templates=[b64(inf.astype("<f4").tobytes())]),
           dict(good, templates=[b64(v[:127].astype("<f4").tobytes())]),
           dict(good, templates=[good["templates"][0]] * (MAX_DOOR_TEMPLATES + 1)),
           dict(good, distance=-0.5),
           dict(good, distance=float("nan")),
           dict(good, method="qr"),
           dict(good, resident_id="r/1"),
           dict(good, visit=OTHER_VISIT[:15])]
    assert not RESIDENT.match("r/1")
    for c in bad:
        assert reason(check_proposal, c) == "bad_claims"
        # A door's own seal refuses NaN; a stolen door key need not.
        assert reason(open_proposal, forged(c, door, admin.public()), admin, ring, invitation_id=VISIT) == "bad_claims"
    # The forger itself seals what opens.
    assert open_proposal(forged(good, door, admin.public()), admin, ring, invitation_id=VISIT).claims == good


def test_the_back_end_files_it_under_the_visit(parties):
    admin, door, _ = parties
    sealed = seal_proposal(door_claims(), door, admin.public())
    event = {"event_id": "e-1", "seq": 1, "site": SITE, "device": "door-1", "type": PROPOSAL_EVENT,
             "time": time.time(), "proposal": sealed, "visit": VISIT, "proposal_kind": "door_template"}
    assert check_claims(event) is event
    for visit in ("0190f3a2-7c1e", VISIT[:8] + " " + VISIT[9:], "x" * 65, VISIT + "\n", 1234567890123456789):
        assert reason(check_claims, dict(event, visit=visit)) == "bad_claims", visit


MUTATIONS = st.sampled_from(["drop", "null", "string", "number", "int", "bool", "list", "dict", "huge", "nan",
                             "inf"])
FIELDS = st.sampled_from(["v", "kind", "site", "device", "visit", "resident_id", "templates", "templates.0",
                          "model_id", "time", "frames", "method", "distance", "liveness", "liveness.blink",
                          "invitation", "name", "extra"])


def mutate(claims, field, how, junk):
    c = copy.deepcopy(claims)
    target, key = c, field
    if "." in field:
        outer, inner = field.split(".")
        target, key = c[outer], int(inner) if inner.isdigit() else inner
    if how == "drop":
        if isinstance(target, dict):
            target.pop(key, None)
        else:
            del target[key]
        return c
    target[key] = {"null": None, "string": junk, "number": len(junk) * 1e300, "int": len(junk) * 2**60,
                   "bool": bool(junk), "list": [junk] * 9, "dict": {junk[:30]: junk}, "huge": junk * 2000,
                   "nan": float("nan"), "inf": float("-inf")}[how]
    return c


def still_sound(c):
    """What an accepted door template promises whoever reads it."""
    DoorTemplateClaims.model_validate(c)
    assert c["kind"] == "door_template" and "invitation" not in c
    assert 1 <= len(c["templates"]) <= MAX_DOOR_TEMPLATES
    assert c["method"] in ("face+qr", "face") and 0.0 <= c["distance"] <= 4.0
    assert isinstance(c["resident_id"], str) and RESIDENT.match(c["resident_id"])
    assert isinstance(c["visit"], str) and 16 <= len(c["visit"]) <= 64
    for t in Proposal(c, f"{SITE}/door-1").templates:
        assert t.shape == (128,) and t.dtype == np.float32 and np.all(np.isfinite(t))


_fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_junk = st.one_of(st.text(max_size=80), st.binary(max_size=600).map(lambda b: b.hex()))


@_fuzz
@given(field=FIELDS, how=MUTATIONS, junk=_junk)
def test_mutated_door_templates_are_refused_or_still_sound(field, how, junk):
    c = mutate(_good(), field, how, junk)
    if refused_quietly(check_proposal, c, junk):
        return
    still_sound(c)


@_fuzz
@given(field=FIELDS, how=MUTATIONS, junk=_junk)
def test_mutated_door_templates_sealed_are_refused_or_opened_sound(parties, field, how, junk):
    admin, door, _ = parties
    c = mutate(_good(), field, how, junk)
    try:
        sealed = seal_proposal(c, door, admin.public())
    except ValueError:  # the door's own JSON refuses NaN and infinities; a stolen key is not so polite
        assert how in ("nan", "inf")
        sealed = forged(c, door, admin.public())
    try:
        check_proposal(c)
        sound = True
    except EnvelopeError:
        sound = False
    try:
        p = open_proposal(sealed, admin, keymod.KeyRing([door.public()]), invitation_id=VISIT)
    except EnvelopeError as e:
        if len(sealed) > 65536:
            assert e.reason == "malformed"
        elif not sound:
            assert e.reason == "bad_claims"
        else:  # sound claims naming another door or another visit
            assert e.reason in ("wrong_door", "wrong_visit"), e.reason
            assert (c["device"], c["visit"]) != ("door-1", VISIT) or c["site"] != SITE
        return
    assert sound and p.claims == c and p.kind == "door_template" and p.key == VISIT
    still_sound(p.claims)


_cache: dict = {}


def _good():
    if "claims" not in _cache:
        _cache["claims"] = door_claims(n=2, now=1_750_000_000.0)
    return _cache["claims"]
