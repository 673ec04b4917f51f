"""What the door screen says: one message at a time, the door's state, and never a resident id."""

from __future__ import annotations

import pytest

from kiosk.clock import FakeClock
from kiosk.config import ScreenSettings
from kiosk.match.decide import Decision, Outcome
from kiosk.prompts import TEXTS, Prompt
from kiosk.screen.panel import DoorScreen
from kiosk.screen.state import INSTRUCTION_S, OUTCOME_S, ScreenState


@pytest.fixture
def clock():
    return FakeClock(100.0)


@pytest.fixture
def state(clock):
    return ScreenState(clock=clock.monotonic)


def test_idle_door_says_nothing(state):
    assert state.view() == {"door": "ok", "door_text": "", "link": {"offline": False, "queued": 0, "text": None},
                            "message": None}


def test_welcome_has_the_display_name_and_goes_away(state, clock):
    state.say(Prompt.WELCOME, "Ada L.")
    assert state.view()["message"] == {"prompt": "welcome", "text": "Welcome, Ada L.", "kind": "outcome",
                                       "tone": "good"}
    clock.advance(OUTCOME_S - 0.1)
    assert state.view()["message"]["text"] == "Welcome, Ada L."
    clock.advance(0.2)
    assert state.view()["message"] is None


def test_only_welcome_carries_a_name(state):
    state.say(Prompt.NOT_RECOGNISED, "Ada L.")
    assert state.view()["message"]["text"] == "Not recognised"
    state.say(Prompt.WELCOME)
    assert state.view()["message"]["text"] == "Welcome"


def test_an_instruction_is_shorter_and_the_newest_message_wins(state, clock):
    state.say(Prompt.NOT_RECOGNISED)
    state.say(Prompt.COME_CLOSER)
    m = state.view()["message"]
    assert (m["text"], m["kind"], m["tone"]) == (TEXTS[Prompt.COME_CLOSER], "instruction", "ask")
    clock.advance(INSTRUCTION_S + 0.1)
    assert state.view()["message"] is None


def test_out_of_service_hides_messages_until_cleared(state):
    state.say(Prompt.COME_CLOSER)
    state.out_of_service(True)
    v = state.view()
    assert (v["door"], v["door_text"], v["message"]) == ("out_of_service", "Door out of service", None)
    state.clear()
    assert state.view()["door"] == "ok"


def test_the_same_words_are_not_said_twice(state):
    state.door(location_lost=True)
    state.say(Prompt.LOCATION_LOST)  # a check-in refused for the location
    assert state.view()["message"] is None and state.view()["door_text"] == TEXTS[Prompt.LOCATION_LOST]


def test_door_states_and_their_order(state):
    state.door(location_lost=True)
    assert (state.view()["door"], state.view()["door_text"]) == ("location_lost", TEXTS[Prompt.LOCATION_LOST])
    state.door(unprovisioned=True)
    assert (state.view()["door"], state.view()["door_text"]) == ("unprovisioned", "Show the installer's code")
    state.out_of_service(True)  # while unprovisioned, the installer's code is still what is wanted
    assert state.view()["door"] == "unprovisioned"
    state.door(unprovisioned=False, location_lost=False)
    assert state.view()["door"] == "out_of_service"


@pytest.mark.parametrize("offline, queued, text", [
    (True, 0, "Offline: check-ins are kept here"),
    (True, 1, "Offline: 1 check-in queued"),
    (True, 3, "Offline: 3 check-ins queued"),
    (False, 2, "Sending: 2 check-ins queued"),
    (False, 0, None),
])
def test_the_link(state, offline, queued, text):
    state.door(offline=offline, queued=queued)
    assert state.view()["link"] == {"offline": offline, "queued": queued, "text": text}


def test_wait_returns_on_a_change(state):
    import threading

    v = state.wait(-1, 0)
    threading.Timer(0.05, state.say, (Prompt.HOLD_STILL,)).start()
    assert state.wait(v, 5) != v


# -- the screen as a door panel (its server on a free loopback port) --------------------------------------


@pytest.fixture
def screen(clock):
    names = {"R-0042": "Ada L."}
    with DoorScreen(ScreenSettings(enabled=True, port=0), names=names.get, clock=clock.monotonic) as s:
        yield s


def test_accepted_shows_the_name_never_the_id(screen):
    screen.show(Decision(Outcome.ACCEPTED, 1, resident_id="R-0042", distance=0.3))
    v = screen.state.view()
    assert v["message"]["text"] == "Welcome, Ada L."
    assert "R-0042" not in repr(v)


def test_a_resident_without_a_display_name_is_just_welcome(screen):
    screen.show(Decision(Outcome.ACCEPTED, 1, resident_id="R-0007"))
    assert screen.state.view()["message"]["text"] == "Welcome"


@pytest.mark.parametrize("decision, text", [
    (Decision(Outcome.UNKNOWN, 1), "Not recognised"),
    (Decision(Outcome.DUPLICATE, 1, resident_id="R-0042"), "You are already checked in"),
    (Decision(Outcome.TOO_POOR, 1, reason="too_small"), "Please come closer"),
    (Decision(Outcome.LOOK_AT_CAMERA, 1, reason="turn_left"), "Please turn your head to the left"),
    (Decision(Outcome.REFUSED_LOCATION, 1, resident_id="R-0042"), "Door out of service: location lost"),
    (Decision(Outcome.SHOW_QR, 1, candidates=("R-0042", "R-0043")), "Please show your QR code"),
])
def test_each_decision_shows_its_prompt(screen, decision, text):
    screen.show(decision)
    v = screen.state.view()
    assert v["message"]["text"] == text
    assert "R-004" not in repr(v)


def test_error_is_out_of_service_but_a_refused_code_while_unprovisioned(screen):
    screen.error()
    assert screen.state.view()["door"] == "out_of_service"
    screen.show(Decision(Outcome.UNKNOWN, 1))  # frames and decisions again: back in service
    assert screen.state.view()["door"] == "ok"
    screen.door(unprovisioned=True)
    screen.error()
    v = screen.state.view()
    assert (v["door"], v["message"]["text"]) == ("unprovisioned", "This code is not valid")
