"""What the door screen says: the door's state and one message at a time.

The model is fed by the daemon (decisions, the camera's health, the link and
the location) and read by the page as a :meth:`ScreenState.view`: a small
dict of what the person in front of the door may see. A view never holds a
resident id: an accepted resident is greeted by the gallery's display name.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..prompts import TEXTS, Prompt

#: How long an outcome stays on the screen, and an instruction without a newer one.
OUTCOME_S = 5.0
INSTRUCTION_S = 3.0

_OUTCOMES = {Prompt.WELCOME, Prompt.NOT_RECOGNISED, Prompt.ALREADY_CHECKED_IN, Prompt.NOT_ACCEPTED,
             Prompt.CODE_REFUSED, Prompt.OUT_OF_SERVICE, Prompt.LOCATION_LOST, Prompt.UNPROVISIONED,
             Prompt.ENROLL_SENT, Prompt.ENROLL_FAILED}
#: Outcomes that went well: the person is in, or their enrollment at the door is sent.
_GOOD = {Prompt.WELCOME, Prompt.ALREADY_CHECKED_IN, Prompt.ENROLL_SENT}


@dataclass(frozen=True)
class Message:
    prompt: Prompt
    name: str | None  # the display name after "Welcome", or None
    until: float  # monotonic time it goes away

    @property
    def text(self) -> str:
        return f"{TEXTS[self.prompt]}, {self.name}" if self.name else TEXTS[self.prompt]

    @property
    def kind(self) -> str:
        return "outcome" if self.prompt in _OUTCOMES else "instruction"

    @property
    def tone(self) -> str:
        if self.prompt in _GOOD:
            return "good"
        return "bad" if self.prompt in _OUTCOMES else "ask"


class ScreenState:
    """The screen's model; every method is safe from any thread.

    :param clock: monotonic seconds (a fake clock in tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._changed = threading.Condition()
        self._version = 0
        self._message: Message | None = None
        self._out_of_service = False
        self._unprovisioned = False
        self._location_lost = False
        self._offline = False
        self._queued = 0

    # -- what the daemon tells it --------------------------------------------

    def say(self, prompt: Prompt, name: str | None = None) -> None:
        """Show ``prompt`` (an outcome for :data:`OUTCOME_S`, an instruction for :data:`INSTRUCTION_S`)."""
        hold = OUTCOME_S if prompt in _OUTCOMES else INSTRUCTION_S
        name = name if prompt is Prompt.WELCOME else None
        self._set(_message=Message(prompt, name, self._clock() + hold))

    def out_of_service(self, on: bool) -> None:
        self._set(_out_of_service=on)

    def door(self, *, unprovisioned: bool | None = None, location_lost: bool | None = None,
             offline: bool | None = None, queued: int | None = None) -> None:
        """Update the parts of the door's state that are given."""
        given = {"_unprovisioned": unprovisioned, "_location_lost": location_lost, "_offline": offline,
                 "_queued": queued}
        self._set(**{k: v for k, v in given.items() if v is not None})

    def clear(self) -> None:
        """No message, and back in service."""
        self._set(_message=None, _out_of_service=False)

    # -- what the page reads ---------------------------------------------------

    @property
    def unprovisioned(self) -> bool:
        return self._unprovisioned

    def view(self) -> dict:
        """What the screen shows now: ``door`` (state and its words), ``link`` and ``message`` (or None)."""
        with self._changed:
            now = self._clock()
            if self._out_of_service and not self._unprovisioned:
                door = Prompt.OUT_OF_SERVICE
            elif self._unprovisioned:
                door = Prompt.UNPROVISIONED
            elif self._location_lost:
                door = Prompt.LOCATION_LOST
            else:
                door = None
            m = self._message if self._message is not None and now < self._message.until else None
            if m is not None and (door is Prompt.OUT_OF_SERVICE or m.prompt is door):
                m = None  # nothing else to say while the door is out of order, nor the same words twice
            queued, offline = self._queued, self._offline
        link = None
        if offline or queued:
            link = ("Offline: " if offline else "Sending: ") + (
                f"{queued} check-in{'s' if queued != 1 else ''} queued" if queued else "check-ins are kept here")
        return {
            "door": door.value if door else "ok",
            "door_text": TEXTS[door] if door else "",
            "link": {"offline": offline, "queued": queued, "text": link},
            "message": None if m is None else {"prompt": m.prompt.value, "text": m.text, "kind": m.kind,
                                               "tone": m.tone},
        }

    def wait(self, version: int, timeout: float) -> int:
        """Block until the state changes past ``version`` or ``timeout``; the current version."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version, timeout)
            return self._version

    def wake(self) -> None:
        """Wake every waiting reader (when the server stops)."""
        self._set()

    # -- inside -----------------------------------------------------------------

    def _set(self, **fields) -> None:
        with self._changed:
            for k, v in fields.items():
                setattr(self, k, v)
            self._version += 1
            self._changed.notify_all()
