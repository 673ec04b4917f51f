"""The door screen as the daemon holds it: a door panel that speaks through the page."""

from __future__ import annotations

import logging
from typing import Callable

from ..config import ScreenSettings
from ..errors import ScreenUnavailable
from ..match.decide import Decision
from ..prompts import Prompt, for_decision
from .camera import LiveView
from .server import ScreenServer
from .state import ScreenState

log = logging.getLogger(__name__)


class DoorScreen:
    """The screen's model, its live picture and its server, driven like the GPIO panel.

    :param names: a resident id to the gallery's display name (or None); only
        the name reaches the page, and only on "Welcome".
    """

    motion_sensor = None

    def __init__(self, settings: ScreenSettings, names: Callable[[str], str | None] | None = None, **state_kw):
        self.settings = settings
        self.names = names
        self.state = ScreenState(**state_kw)
        self.live = LiveView()
        try:
            self.server = ScreenServer(self.state, self.live, host=settings.bind, port=settings.port,
                                       open_to_network=settings.open_to_network)
        except OSError as e:
            raise ScreenUnavailable(f"screen.port = {settings.port} on {settings.bind}: {e.strerror or e}") from e

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "DoorScreen":
        self.server.start()
        return self

    # -- the panel's calls -------------------------------------------------------

    def show(self, decision: Decision) -> None:
        prompt = for_decision(decision)
        name = None
        if prompt is Prompt.WELCOME and decision.resident_id and self.names is not None:
            name = self.names(decision.resident_id)
        self.state.out_of_service(False)  # a decision: the camera works again
        self.state.say(prompt, name)

    def error(self) -> None:
        if self.state.unprovisioned:  # a provisioning code was refused, nothing is out of order
            self.state.say(Prompt.CODE_REFUSED)
        else:
            self.state.out_of_service(True)
            self.live.forget()

    def clear(self) -> None:
        self.state.clear()

    def close(self) -> None:
        self.live.forget()
        self.server.close()

    # -- what else the daemon tells the screen --------------------------------------

    def see(self, image, boxes=()) -> None:
        self.live.put(image, boxes)

    def door(self, **state) -> None:
        """The door's state (:meth:`ScreenState.door`)."""
        self.state.door(**state)

    def __enter__(self) -> "DoorScreen":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
