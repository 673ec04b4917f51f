"""What a resident is told: one plain instruction or outcome at a time.

The door screen shows :data:`TEXTS`, the voice prompts speak them (one audio
file per :class:`Prompt`, named by its value), and the LEDs keep their
signals. :func:`for_decision` picks the prompt for a decision from its
outcome and reason: a quality gate's reason picks the instruction that would
fix it ("come closer" for a face too small).
"""

from __future__ import annotations

import enum

from .match.decide import Decision, Outcome


class Prompt(str, enum.Enum):
    # Instructions, while a visit goes on.
    COME_CLOSER = "come_closer"
    MOVE_TO_CENTRE = "move_to_centre"
    HOLD_STILL = "hold_still"
    FACE_CAMERA = "face_camera"
    MORE_LIGHT = "more_light"
    ONE_AT_A_TIME = "one_at_a_time"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    SHOW_QR = "show_qr"
    ENROLL_LOOK = "enroll_look"
    ENROLL_TURN = "enroll_turn"
    # Outcomes.
    WELCOME = "welcome"
    NOT_RECOGNISED = "not_recognised"
    ALREADY_CHECKED_IN = "already_checked_in"
    NOT_ACCEPTED = "not_accepted"
    CODE_REFUSED = "code_refused"
    ENROLL_SENT = "enroll_sent"
    ENROLL_FAILED = "enroll_failed"
    # The door's state.
    OUT_OF_SERVICE = "out_of_service"
    LOCATION_LOST = "location_lost"
    UNPROVISIONED = "unprovisioned"


#: The site's words (English by default). "Welcome" is followed by the gallery's display name on the screen.
TEXTS: dict[Prompt, str] = {
    Prompt.COME_CLOSER: "Please come closer",
    Prompt.MOVE_TO_CENTRE: "Please move to the centre",
    Prompt.HOLD_STILL: "Please hold still",
    Prompt.FACE_CAMERA: "Please face the camera",
    Prompt.MORE_LIGHT: "Please step into the light",
    Prompt.ONE_AT_A_TIME: "One person at a time, please",
    Prompt.TURN_LEFT: "Please turn your head to the left",
    Prompt.TURN_RIGHT: "Please turn your head to the right",
    Prompt.SHOW_QR: "Please show your QR code",
    Prompt.ENROLL_LOOK: "Enrolling: please look at the camera",
    Prompt.ENROLL_TURN: "Now turn your head slightly",
    Prompt.WELCOME: "Welcome",
    Prompt.NOT_RECOGNISED: "Not recognised",
    Prompt.ALREADY_CHECKED_IN: "You are already checked in",
    Prompt.NOT_ACCEPTED: "Not accepted",
    Prompt.CODE_REFUSED: "This code is not valid",
    Prompt.ENROLL_SENT: "Thank you: your enrollment is sent for approval",
    Prompt.ENROLL_FAILED: "Enrollment did not finish: please try again",
    Prompt.OUT_OF_SERVICE: "Door out of service",
    Prompt.LOCATION_LOST: "Door out of service: location lost",
    Prompt.UNPROVISIONED: "Show the installer's code",
}

#: A quality gate's reason (kiosk.match.detect) or a check's reason, and the instruction that fixes it.
REASON_PROMPTS: dict[str, Prompt] = {
    "too_small": Prompt.COME_CLOSER,
    "partly_outside": Prompt.MOVE_TO_CENTRE,
    "off_centre": Prompt.MOVE_TO_CENTRE,
    "blurred": Prompt.HOLD_STILL,
    "turned_away": Prompt.FACE_CAMERA,
    "too_dark": Prompt.MORE_LIGHT,
    "several_faces": Prompt.ONE_AT_A_TIME,
    "no_face": Prompt.FACE_CAMERA,
    "turn_left": Prompt.TURN_LEFT,
    "turn_right": Prompt.TURN_RIGHT,
    "enroll_turn": Prompt.ENROLL_TURN,
}

_OUTCOME_PROMPTS: dict[Outcome, Prompt] = {
    Outcome.ACCEPTED: Prompt.WELCOME,
    Outcome.UNKNOWN: Prompt.NOT_RECOGNISED,
    Outcome.DUPLICATE: Prompt.ALREADY_CHECKED_IN,
    Outcome.LOOK_AT_CAMERA: Prompt.FACE_CAMERA,
    Outcome.SPOOF: Prompt.NOT_ACCEPTED,
    Outcome.REFUSED_LOCATION: Prompt.LOCATION_LOST,
    Outcome.QR_REFUSED: Prompt.CODE_REFUSED,
    Outcome.SHOW_QR: Prompt.SHOW_QR,
    Outcome.TOO_POOR: Prompt.FACE_CAMERA,
    Outcome.ENROLLING: Prompt.ENROLL_LOOK,
    Outcome.ENROLL_PROPOSED: Prompt.ENROLL_SENT,
    Outcome.ENROLL_FAILED: Prompt.ENROLL_FAILED,
}


def for_decision(decision: Decision) -> Prompt:
    """The one thing to tell the person in front of the door about ``decision``."""
    if (decision.outcome in (Outcome.TOO_POOR, Outcome.LOOK_AT_CAMERA, Outcome.ENROLLING)
            and decision.reason in REASON_PROMPTS):
        return REASON_PROMPTS[decision.reason]
    return _OUTCOME_PROMPTS[decision.outcome]
