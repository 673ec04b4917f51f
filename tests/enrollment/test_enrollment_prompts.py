"""What a resident enrolling at the door is told, on the screen: instructions while it goes on, then an
outcome that stays (sent: good; not finished: bad)."""

from __future__ import annotations

import pytest

from kiosk.match.decide import Decision, Outcome
from kiosk.prompts import TEXTS, Prompt, for_decision
from kiosk.screen.state import INSTRUCTION_S, OUTCOME_S, ScreenState


@pytest.mark.parametrize("decision, prompt, kind, tone, hold", [
    (Decision(Outcome.ENROLLING, 1, method="invitation"), Prompt.ENROLL_LOOK, "instruction", "ask", INSTRUCTION_S),
    (Decision(Outcome.ENROLLING, 1, reason="enroll_turn"), Prompt.ENROLL_TURN, "instruction", "ask", INSTRUCTION_S),
    (Decision(Outcome.ENROLLING, 1, reason="too_small"), Prompt.COME_CLOSER, "instruction", "ask", INSTRUCTION_S),
    (Decision(Outcome.ENROLL_PROPOSED, 1), Prompt.ENROLL_SENT, "outcome", "good", OUTCOME_S),
    (Decision(Outcome.ENROLL_FAILED, 1, reason="face_lost"), Prompt.ENROLL_FAILED, "outcome", "bad", OUTCOME_S),
])
def test_the_enrollment_on_the_screen(decision, prompt, kind, tone, hold):
    now = [100.0]
    state = ScreenState(clock=lambda: now[0])
    assert for_decision(decision) is prompt
    state.say(for_decision(decision))
    assert state.view()["message"] == {"prompt": prompt.value, "text": TEXTS[prompt], "kind": kind, "tone": tone}
    now[0] += hold + 0.1
    assert state.view()["message"] is None
