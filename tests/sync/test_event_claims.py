"""The event claim set's checks (kiosk/sync/events/format.py): type and range before anything is stored."""

from __future__ import annotations

import pytest

from kiosk.errors import EnvelopeError
from kiosk.match.decide import Decision, Outcome
from kiosk.sync.events.format import SEQ_MAX, check_claims, printable
from kiosk.sync.events.outbox import Outbox

GOOD = {"event_id": "0190-e", "seq": 7, "site": "elm-court", "device": "door-1", "type": "checkin",
        "outcome": "ACCEPTED", "resident_id": "r-1", "distance": 0.31, "margin": 0.12, "frames": 3,
        "liveness": {"blink": 0.5}, "gallery_version": "12", "time": 1_800_000_000.5, "v": 1}


def refused(**change) -> EnvelopeError:
    claims = {**GOOD, **change}
    with pytest.raises(EnvelopeError) as e:
        check_claims(claims)
    return e.value


def test_a_sane_event_passes_unchanged():
    assert check_claims(dict(GOOD)) == GOOD
    assert check_claims({**GOOD, "seq": SEQ_MAX, "gallery_version": 3, "future_claim": {"a": [1, "b"]}})


@pytest.mark.parametrize("change, claim", [
    ({"seq": 2**63}, "seq"), ({"seq": -1}, "seq"), ({"seq": True}, "seq"), ({"seq": "7"}, "seq"),
    ({"time": 10**400}, "time"), ({"time": float("inf")}, "time"), ({"time": 1.0}, "time"),
    ({"time": 5e9}, "time"), ({"resident_id": {"a": 1}}, "resident_id"), ({"resident_id": "r\x00"}, "resident_id"),
    ({"outcome": "\ud800"}, "outcome"), ({"site": "elm/court"}, "site"), ({"event_id": "x" * 65}, "event_id"),
    ({"liveness": {"blink": float("nan")}}, "liveness.blink"), ({"reason": "y" * 501}, "reason"),
])
def test_each_claim_is_checked_for_type_and_range(change, claim):
    err = refused(**change)
    assert err.reason == "bad_claims"
    assert f"claim {claim!r}" in str(err)


def test_a_refusal_names_the_claim_never_its_value():
    assert "secret-resident" not in str(refused(resident_id={"secret-resident": 1}))
    assert "secret-resident" not in str(refused(resident_id="secret-resident\x00"))


def test_missing_claims_and_unknown_claims():
    claims = dict(GOOD)
    del claims["seq"]
    with pytest.raises(EnvelopeError, match="claim 'seq' missing") as e:
        check_claims(claims)
    assert e.value.reason == "missing_claims"
    assert refused(extra={"deep": [[[[[1]]]]]}).reason == "bad_claims"
    assert "extra.nul" in str(refused(extra={"nul": "\x00"}))
    assert refused(**{"a\ud800": 1}).reason == "bad_claims"
    assert refused(big=2**64).reason == "bad_claims"


def test_printable_escapes_what_a_store_or_a_terminal_cannot_hold():
    text = printable("alg \ud800 and \x00\n\x1b[31m")
    assert text == "alg \\ud800 and \\x00\\x0a\\x1b[31m"
    text.encode("utf-8")
    assert len(printable("x" * 1000)) == 500


def test_the_outbox_refuses_what_the_back_end_would_refuse(tmp_path):
    """A door commits nothing the back end would drop: the same checks, before the event is stored."""
    outbox = Outbox.open(tmp_path / "kiosk.db", site="elm-court", device="door-1")
    try:
        d = Decision(Outcome.ACCEPTED, track_id=1, resident_id="r-1", distance=0.3, margin=0.1, frames=3)
        assert outbox.commit(d, model_id="dlib").seq == 1
        with pytest.raises(ValueError, match="model_id"):
            outbox.commit(d, model_id="dlib\x00")
        assert outbox.depth() == 1
    finally:
        outbox.close()
