"""The door's side of door templates (kiosk.enrollment.door_templates): which accepted visits propose their descriptor,
sealed to the admin, and which do not; at most one per resident per ``min_interval_h``.

The faces are real: photos of the shared LFW development set, described by the door's own model. The resident
``r-hu`` is enrolled from one photo of Hu Jintao; their other photos are the resident at the door, and photos of
Wen Jiabao a look-alike (within the candidate rule's distance of some of them, not of others)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import HU, WEN
from harness.gallery_kit import device_state
from kiosk.config import parse_config
from kiosk.enrollment.door_templates import METHOD, DoorTemplateProposer, open_proposer, resident_distance
from kiosk.enrollment.proposal import DOOR_TEMPLATE, open_proposal
from kiosk.gallery.store import Gallery, Resident
from kiosk.match.decide import Decision, OperatingPoint, Outcome
from kiosk.match.models import MODEL_ID
from kiosk.sync import keys as keymod

SITE, DEVICE = "test-site", "kiosk-t1"
#: Check-ins' event ids (the outbox's uuid7): what a proposal names as its visit.
VISITS = [f"0190f3a2-7c1e-7b3d-9a4f-2e8c5d6b1a{i:02d}" for i in range(20)]
#: The face alone's point: a face proposes alone at most SURE_MARGIN under its threshold.
POINT = OperatingPoint(threshold=0.40, margin=0.05, visit_threshold=0.38)
SURE_MARGIN = 0.06  # the shipped door_templates.sure_margin
START = 1_750_000_000.0
HOUR = 3600.0


class WallClock:
    """The door's wall clock, advanced by the test."""

    def __init__(self, t: float = START):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(scope="module")
def parties():
    return keymod.generate("admin"), keymod.generate(f"{SITE}/{DEVICE}")


@pytest.fixture
def gallery(faces):
    """The door's gallery: r-hu and r-wen, one enrolled photo each."""
    residents = {"r-hu": Resident("r-hu", "Hu"), "r-wen": Resident("r-wen", "Wen")}
    return Gallery(residents, ["r-hu", "r-wen"], np.vstack([faces[HU][0], faces[WEN][0]]))


def settings(tmp_path, extra: str = ""):
    return parse_config(f'[device]\nsite = "{SITE}"\ndevice_id = "{DEVICE}"\nstate_dir = "{tmp_path / "state"}"\n'
                        + extra)


def proposer_for(config, parties, clock=None) -> DoorTemplateProposer:
    admin, door = parties
    return DoorTemplateProposer(config, door=door, admin=admin.public(), model_id=MODEL_ID,
                                wall_clock=clock or WallClock())


def accepted(descriptor, resident="r-hu", method="face+qr", reason=None, outcome=Outcome.ACCEPTED) -> Decision:
    return Decision(outcome, 7, resident_id=resident, distance=0.3, margin=0.1, frames=5, reason=reason,
                    timestamp=123.5, liveness={"blink": 0.7}, method=method, descriptor=descriptor)


def propose(proposer: DoorTemplateProposer, d: Decision, visit: str, gallery, point=POINT):
    """What the daemon does after a check-in: consider the visit, and once its proposal is stored, say so."""
    got = proposer.consider(d, visit, gallery, point)
    if got is not None:
        proposer.committed(got[0].resident_id)
    return got


def distance(gallery, descriptor, rid="r-hu") -> float:
    return resident_distance(gallery, descriptor, rid, means=True, now=START)


def test_a_face_the_credential_confirmed_within_the_candidate_rule_proposes_it_sealed(faces, gallery, config,
                                                                                       parties):
    admin, door = parties
    clock = WallClock()
    proposer = proposer_for(config, parties, clock)
    face = faces[HU][1]
    d = distance(gallery, face)
    assert d <= config.match.threshold, d
    visit = accepted(face)
    got = proposer.consider(visit, VISITS[0], gallery, POINT)
    assert got is not None
    assert proposer.proposed == 0, "counted once the daemon has stored it"
    proposer.committed("r-hu")
    event, extra = got
    assert (event.outcome, event.method, event.resident_id) == (Outcome.ENROLL_PROPOSED, METHOD, "r-hu")
    assert METHOD == "door_template"
    assert (event.track_id, event.frames, event.timestamp) == (7, 5, 123.5)
    assert event.descriptor is None, "the descriptor goes sealed, never as the event's own"
    assert set(extra) == {"proposal", "visit", "proposal_kind"}
    assert (extra["visit"], extra["proposal_kind"]) == (VISITS[0], "door_template")
    assert "r-hu" not in extra["proposal"]
    p = open_proposal(extra["proposal"], admin, keymod.KeyRing([door.public()]), invitation_id=VISITS[0])
    c = p.claims
    assert (p.kind, p.key, p.resident_id, p.signer) == (DOOR_TEMPLATE, VISITS[0], "r-hu", f"{SITE}/{DEVICE}")
    assert (c["site"], c["device"], c["visit"], c["method"], c["model_id"]) == (SITE, DEVICE, VISITS[0], "face+qr",
                                                                                 MODEL_ID)
    assert c["distance"] == pytest.approx(resident_distance(gallery, face, "r-hu", means=config.match.mean_template,
                                                            now=clock.t), abs=1e-6)
    assert c["distance"] == pytest.approx(d, abs=1e-6)
    assert (c["time"], c["frames"], c["liveness"]) == (START, 5, {"blink": 0.7})
    [template] = p.templates
    assert np.array_equal(template, face.astype(np.float32))
    assert proposer.proposed == 1 and not proposer.skipped
    assert proposer.status() == {"enabled": True, "proposed": 1}
    assert gallery.template_count == 2, "the door adds nothing to its own gallery"


def test_a_face_farther_than_the_candidate_rule_proposes_nothing(faces, gallery, config, parties, tmp_path):
    proposer = proposer_for(config, parties)
    lookalike, stranger = faces[WEN][2], faces[WEN][0]
    assert distance(gallery, lookalike) <= config.match.threshold < distance(gallery, stranger)
    assert proposer.consider(accepted(stranger), VISITS[1], gallery, POINT) is None
    assert proposer.skipped["not_sure"] == 1 and proposer.proposed == 0
    assert proposer.status() == {"enabled": True, "proposed": 0, "skipped_not_sure": 1}
    # The candidate rule is match.threshold: tightened, the look-alike (within the shipped 0.45) is refused too.
    strict = proposer_for(settings(tmp_path, "[match]\nthreshold = 0.40\nvisit_threshold = 0.38\n"), parties)
    assert distance(gallery, lookalike) > 0.40
    assert strict.consider(accepted(lookalike), VISITS[2], gallery, POINT) is None
    assert strict.skipped["not_sure"] == 1
    assert proposer.consider(accepted(lookalike), VISITS[3], gallery, POINT) is not None, \
        "within the shipped candidate rule, the door is sure (the admin's anchor is what stops a look-alike)"


def test_the_face_alone_proposes_only_far_inside_the_threshold_with_the_active_check(faces, gallery, config,
                                                                                      parties, tmp_path):
    assert config.door_templates.sure_margin == SURE_MARGIN
    own = faces[HU]
    inside, band = own[1], own[2]
    assert distance(gallery, inside) <= POINT.threshold - SURE_MARGIN < distance(gallery, band) <= POINT.threshold
    near = own[0] + np.float32(0.001)
    assert distance(gallery, near) < 0.02
    proposer = proposer_for(config, parties)
    # No active check: not sure twice over, however close.
    assert proposer.consider(accepted(near, method="face"), VISITS[0], gallery, POINT) is None
    assert proposer.consider(accepted(near, method="face", reason="liveness"), VISITS[1], gallery, POINT) is None
    assert proposer.skipped["not_sure"] == 2
    # Within the margin band under the threshold: the face alone opened the door, but is not sure enough.
    assert proposer.consider(accepted(band, method="face", reason="active_check"), VISITS[2], gallery, POINT) is None
    assert proposer.skipped["not_sure"] == 3 and proposer.proposed == 0
    # Far inside, with the active check passed.
    got = propose(proposer, accepted(inside, method="face", reason="active_check"), VISITS[3], gallery, POINT)
    assert got is not None and proposer.proposed == 1
    admin, door = parties
    claims = open_proposal(got[1]["proposal"], admin, keymod.KeyRing([door.public()])).claims
    assert (claims["method"], claims["visit"]) == ("face", VISITS[3])
    # The margin is door_templates.sure_margin: with none, the band proposes.
    loose = proposer_for(settings(tmp_path, "[door_templates]\nsure_margin = 0.0\n"), parties)
    assert loose.consider(accepted(band, method="face", reason="active_check"), VISITS[4], gallery, POINT) is not None


def test_one_proposal_per_resident_per_interval(faces, gallery, config, parties):
    clock = WallClock()
    proposer = proposer_for(config, parties, clock)
    interval = config.door_templates.min_interval_h * HOUR
    assert interval == 24 * HOUR
    hu, wen = faces[HU], faces[WEN]
    assert propose(proposer, accepted(hu[1]), VISITS[0], gallery, POINT) is not None
    clock.advance(interval - 1)
    assert propose(proposer, accepted(hu[3]), VISITS[1], gallery, POINT) is None
    assert proposer.skipped["too_soon"] == 1
    # Another resident is not held back by the first.
    assert distance(gallery, wen[1], "r-wen") <= config.match.threshold
    assert propose(proposer, accepted(wen[1], resident="r-wen"), VISITS[2], gallery, POINT) is not None
    # A visit that was not sure does not start the resident's interval, nor one held back.
    clock.advance(1)
    assert propose(proposer, accepted(wen[0], resident="r-hu"), VISITS[3], gallery, POINT) is None  # stranger
    assert proposer.skipped["not_sure"] == 1
    got = propose(proposer, accepted(hu[3]), VISITS[4], gallery, POINT)
    assert got is not None, "the interval is counted from the last proposal, and a full interval has passed"
    admin, door = parties
    assert open_proposal(got[1]["proposal"], admin, keymod.KeyRing([door.public()])).claims["time"] == START + interval
    assert propose(proposer, accepted(hu[2]), VISITS[5], gallery, POINT) is None
    assert proposer.status() == {"enabled": True, "proposed": 3, "skipped_not_sure": 1, "skipped_too_soon": 2}


def test_min_interval_zero_proposes_every_sure_visit(faces, gallery, parties, tmp_path):
    proposer = proposer_for(settings(tmp_path, "[door_templates]\nmin_interval_h = 0\n"), parties)
    assert all(propose(proposer, accepted(faces[HU][i]), VISITS[i], gallery, POINT) is not None for i in (1, 2, 3))
    assert proposer.proposed == 3


def test_what_never_proposes(faces, gallery, config, parties):
    face = faces[HU][1]
    clock = WallClock()
    proposer = proposer_for(config, parties, clock)
    never = [accepted(face, outcome=Outcome.DUPLICATE), accepted(face, outcome=Outcome.UNKNOWN),
             accepted(face, outcome=Outcome.SHOW_QR), accepted(face, method="qr"),
             accepted(None), accepted(face, resident="r-gone"), accepted(face, resident=None),
             accepted(face, method="qr", reason="active_check")]
    for i, d in enumerate(never):
        assert propose(proposer, d, VISITS[i], gallery, POINT) is None, d.describe()
    assert proposer.proposed == 0
    # A resident no longer valid at the door's wall clock: their face is nobody's.
    expired = Gallery({"r-hu": Resident("r-hu", "Hu", valid_until=START - 1)}, ["r-hu"], faces[HU][:1])
    assert propose(proposer, accepted(face), VISITS[10], expired, POINT) is None
    assert proposer.skipped["not_sure"] == 1 and proposer.proposed == 0
    # None of these started the resident's interval.
    assert propose(proposer, accepted(face), VISITS[11], gallery, POINT) is not None


def test_open_proposer_where_the_door_can_seal_to_the_admin(tmp_path, parties):
    admin, _ = parties
    state, keys = device_state(tmp_path / "state", SITE, DEVICE, admin.public())
    head = f'[device]\nsite = "{SITE}"\ndevice_id = "{DEVICE}"\nstate_dir = "{state}"\n'
    mqtt = "[mqtt]\nenabled = true\n"
    clock = WallClock(START + 5)
    proposer = open_proposer(parse_config(head + mqtt), wall_clock=clock)
    assert proposer is not None and proposer.model_id == MODEL_ID
    assert proposer.door.signing_kid == keys.signing_kid
    # What it seals, the admin opens: the door's own key signed it, the admin's public key sealed it.
    g = Gallery({"r-1": Resident("r-1", "One")}, ["r-1"], np.eye(128, dtype=np.float32)[:1])
    got = proposer.consider(accepted(np.eye(128, dtype=np.float32)[0], resident="r-1"), VISITS[0], g, POINT)
    assert got is not None
    p = open_proposal(got[1]["proposal"], admin, keymod.KeyRing([keys.public()]), invitation_id=VISITS[0])
    assert p.signer == f"{SITE}/{DEVICE}" and p.claims["time"] == START + 5 and p.claims["distance"] == 0.0
    # Off, enrollment at the door off, no MQTT to send it by: none.
    assert open_proposer(parse_config(head + mqtt + "[door_templates]\nenabled = false\n")) is None
    assert open_proposer(parse_config(head + mqtt + "[enrollment]\nenabled = false\n")) is None
    assert open_proposer(parse_config(head)) is None
    # No admin public key to seal to.
    (state / "admin.pub.jwks").unlink()
    assert open_proposer(parse_config(head + mqtt)) is None


def test_after_a_restart_the_door_keeps_to_the_interval(faces, gallery, tmp_path, parties):
    """The last proposals are read back from the door's outbox: a restart does not propose again within the day."""
    from kiosk.sync.events.outbox import Outbox

    admin, _ = parties
    state, _ = device_state(tmp_path / "state", SITE, DEVICE, admin.public())
    config = parse_config(f'[device]\nsite = "{SITE}"\ndevice_id = "{DEVICE}"\nstate_dir = "{state}"\n'
                          "[mqtt]\nenabled = true\n")
    clock = WallClock(START)
    outbox = Outbox.open(state / "kiosk.db", site=SITE, device=DEVICE, wall_clock=clock)
    try:
        first = open_proposer(config, wall_clock=clock, outbox=outbox)
        checkin = outbox.commit(accepted(faces[HU][1]), model_id=MODEL_ID)
        event, extra = propose(first, accepted(faces[HU][1]), checkin.event_id, gallery, POINT)
        outbox.commit(event, model_id=MODEL_ID, **extra)
        outbox.commit(accepted(faces[WEN][1], resident="r-wen"), model_id=MODEL_ID)  # a check-in proposes nothing
        clock.advance(3 * HOUR)
        again = open_proposer(config, wall_clock=clock, outbox=outbox)  # the door restarted
        assert propose(again, accepted(faces[HU][3]), VISITS[1], gallery, POINT) is None
        assert again.skipped["too_soon"] == 1
        assert propose(again, accepted(faces[WEN][1], resident="r-wen"), VISITS[2], gallery, POINT) is not None
        clock.advance(21 * HOUR)
        assert open_proposer(config, wall_clock=clock, outbox=outbox).consider(
            accepted(faces[HU][3]), VISITS[3], gallery, POINT) is not None
    finally:
        outbox.close()


def test_a_proposal_the_door_could_not_store_starts_no_interval_and_a_reload_can_turn_it_off(faces, gallery, config,
                                                                                            parties, tmp_path):
    """The daemon says a proposal is stored (``committed``) only after its outbox took it: one that was not (the outbox
    full, the disk failing) neither counts nor holds the resident back. A SIGHUP's config with door templates off
    proposes nothing more, and the status says so."""
    proposer = proposer_for(config, parties)
    assert proposer.consider(accepted(faces[HU][1]), VISITS[0], gallery, POINT) is not None  # never stored
    assert proposer.consider(accepted(faces[HU][3]), VISITS[1], gallery, POINT) is not None
    assert proposer.status()["proposed"] == 0 and not proposer.skipped
    proposer.committed("r-hu")
    assert proposer.consider(accepted(faces[HU][2]), VISITS[2], gallery, POINT) is None
    assert proposer.skipped["too_soon"] == 1
    proposer.config = settings(tmp_path, "[door_templates]\nenabled = false\nmin_interval_h = 0\n")
    assert proposer.consider(accepted(faces[WEN][1], resident="r-wen"), VISITS[3], gallery, POINT) is None
    assert proposer.status() == {"enabled": False, "proposed": 1, "skipped_too_soon": 1}
