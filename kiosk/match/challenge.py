"""The active check: when the passive cues cannot tell, ask for small head turns in random directions.

The resident is asked to turn the head to the left or to the right (chosen
by ``secrets`` for each turn), ``active_turns`` times. Each turn must reach
``active_turn_deg`` degrees of yaw (:mod:`kiosk.match.pose`) from where the
face was when the check began, in the asked direction, within
``active_window_s`` of being asked; before the next turn counts, the head
comes back to the centre (within half of that). A turn the wrong way fails
the check at once, and so does a turn not made in time. A turn, either way,
counts when two frames in a row show it: dlib's landmarks can jump for one
frame (a hand, another face nearby), and one frame must not pass or fail it.

A still picture cannot turn its head (tilting a print changes the landmarks'
spacing, not the nose's place in the face, so the yaw hardly moves). A
replayed video turns, if at all, where its recording turned: it follows each
asked direction by chance, 1 in 2 per turn, 1 in 4 for the default two (and
then still has to get past the passive cues, which go on watching).

The yaw comes from the liveness check's own landmark fits (``Evidence.yaws``).
"""

from __future__ import annotations

import secrets
import statistics
from dataclasses import dataclass

from ..config import LivenessSettings

LEFT, RIGHT = "turn_left", "turn_right"  # the reasons the door screen and voice turn into words
PASSED, WRONG_TURN, NO_TURN = "passed", "challenge_wrong_turn", "challenge_no_turn"
#: Where a challenge lives: ``track.extras[KEY]``.
KEY = "challenge"
# Yaw samples before the challenge its centre is taken from.
_BASE_SAMPLES = 5
# Frames in a row that must show a turn.
_HOLD = 2


@dataclass
class Challenge:
    """One visit's challenge and how far it has got (feed it yaw samples with :meth:`advance`)."""

    turns: tuple[str, ...]
    started: float
    base: float | None  # the yaw the turns are measured from (None: the first sample after the start)
    window_s: float
    turn_deg: float
    step: int = 0  # turns done
    step_since: float = 0.0  # when the current turn was asked
    centred: bool = True  # the head is back at the centre since the last turn
    result: str | None = None  # PASSED, WRONG_TURN or NO_TURN
    done_at: float | None = None
    seen: int = 0  # yaw samples consumed
    announced: int = -1  # the last turn the resident was told about
    unsure_at: float | None = None  # when the passive cues first said unsure (kept by the recogniser)
    run: int = 0  # frames in a row turned the asked way (> 0) or the other way (< 0)

    @classmethod
    def start(cls, settings: LivenessSettings, t: float, yaws: list[tuple[float, float]], rng=None) -> "Challenge":
        """A new challenge at frame time ``t``; ``yaws``: the visit's (time, yaw) samples so far.

        :param rng: anything with ``choice`` (tests inject a seeded ``random.Random``); default ``secrets``.
        """
        pick = (rng or secrets).choice
        turns = tuple(pick((LEFT, RIGHT)) for _ in range(settings.active_turns))
        recent = [y for _, y in yaws[-_BASE_SAMPLES:]]
        base = statistics.median(recent) if recent else None
        return cls(turns, t, base, settings.active_window_s, settings.active_turn_deg, step_since=t, seen=len(yaws))

    @property
    def asked(self) -> str | None:
        """The turn the resident is being asked for now (None once the check is over)."""
        return self.turns[self.step] if self.result is None else None

    def advance(self, yaws: list[tuple[float, float]], now: float) -> str | None:
        """Take the samples not seen yet and the time ``now``; the result, or None while it goes on."""
        for t, yaw in yaws[self.seen:]:
            self.seen += 1
            if self.result is not None:
                break
            if t - self.step_since > self.window_s:
                break  # too late: the window check below ends it
            if self.base is None:
                self.base = yaw
                continue
            d = yaw - self.base
            if not self.centred:
                self.centred = abs(d) < self.turn_deg / 2
                continue
            want = 1.0 if self.turns[self.step] == LEFT else -1.0  # yaw > 0: turned to the resident's left
            if want * d >= self.turn_deg:
                self.run = max(self.run, 0) + 1
            elif -want * d >= self.turn_deg:
                self.run = min(self.run, 0) - 1
            else:
                self.run = 0
            if self.run >= _HOLD:
                self.step += 1
                self.step_since, self.centred, self.run = t, False, 0
                if self.step == len(self.turns):
                    self.result, self.done_at = PASSED, t
            elif self.run <= -_HOLD:
                self.result, self.done_at = WRONG_TURN, t
        if self.result is None and now - self.step_since > self.window_s:
            self.result, self.done_at = NO_TURN, now
        return self.result

    def scores(self) -> dict[str, float]:
        """What the challenge showed, for the decision's liveness scores (and the event)."""
        out = {"challenge_turns": float(len(self.turns)), "challenge_done": float(self.step),
               "challenge_passed": 1.0 if self.result == PASSED else 0.0}
        if self.done_at is not None:
            out["challenge_s"] = round(self.done_at - self.started, 3)
        return out
