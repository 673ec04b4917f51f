"""What a resident is told follows the decision: the gate's reason picks the instruction."""

import pytest

from kiosk.match.decide import Decision, Outcome
from kiosk.prompts import REASON_PROMPTS, TEXTS, Prompt, for_decision


def test_every_prompt_has_words():
    assert set(TEXTS) == set(Prompt)
    assert all(t and t == t.strip() for t in TEXTS.values())


@pytest.mark.parametrize("reason,prompt", [("too_small", Prompt.COME_CLOSER), ("blurred", Prompt.HOLD_STILL),
                                           ("partly_outside", Prompt.MOVE_TO_CENTRE)])
def test_a_poor_face_is_told_what_fixes_it(reason, prompt):
    assert for_decision(Decision(Outcome.TOO_POOR, 1, reason=reason)) is prompt


def test_an_unknown_reason_falls_back_to_the_outcome():
    assert for_decision(Decision(Outcome.TOO_POOR, 1, reason="no_good_frames")) is Prompt.FACE_CAMERA
    assert for_decision(Decision(Outcome.ACCEPTED, 1, resident_id="r")) is Prompt.WELCOME


def test_every_outcome_has_a_prompt():
    for outcome in Outcome:
        assert for_decision(Decision(outcome, 1)) in TEXTS


def test_the_quality_gates_reasons_are_all_mapped():
    from kiosk.match import detect

    from kiosk.match import challenge

    for reason in (detect.TOO_SMALL, detect.BLURRED, detect.PARTLY_OUTSIDE, detect.NO_FACE, detect.SEVERAL_FACES,
                   detect.TOO_DARK, detect.TURNED_AWAY, challenge.LEFT, challenge.RIGHT):
        assert reason in REASON_PROMPTS
