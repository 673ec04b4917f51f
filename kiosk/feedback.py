"""The door's panels as one: the GPIO panel (relay, lights, buzzer), the screen and the voice.

The daemon drives one panel; :class:`Panels` hands each call to every part,
the GPIO panel first (it opens the door), so that a failing screen or
speaker never keeps the relay or the lights from what they do.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Panels:
    """Several panels driven as one; the first one holds the relay and the sensors."""

    def __init__(self, panels):
        self.parts = list(panels)
        if not self.parts:
            raise ValueError("Panels needs at least the door panel")

    @property
    def motion_sensor(self):
        return getattr(self.parts[0], "motion_sensor", None)

    @property
    def someone_there(self):
        return getattr(self.parts[0], "someone_there", None)

    @property
    def door_open(self) -> bool:
        return bool(getattr(self.parts[0], "door_open", False))

    def pulse(self) -> None:
        self.parts[0].pulse()

    def show(self, decision) -> None:
        self._each("show", decision)

    def error(self) -> None:
        self._each("error")

    def clear(self) -> None:
        self._each("clear")

    def see(self, image, boxes=()) -> None:
        """The newest frame and its faces' boxes, for the parts that show the camera."""
        self._each("see", image, boxes, optional=True)

    def door(self, **state) -> None:
        """The door's state (unprovisioned, location lost, offline, queued) for the parts that tell it."""
        self._each("door", optional=True, **state)

    def close(self) -> None:
        """Close every part, the door panel last (its relay is released whatever the others do)."""
        self._each("close", reverse=True)

    def _each(self, name: str, *args, optional: bool = False, reverse: bool = False, **kw) -> None:
        first: BaseException | None = None
        for part in reversed(self.parts) if reverse else self.parts:
            fn = getattr(part, name, None)
            if fn is None and optional:
                continue
            try:
                fn(*args, **kw)
            except Exception as e:  # the others still get it; the first failure is raised after
                if first is None:
                    first = e
                else:
                    log.exception("%s.%s failed too", type(part).__name__, name)
        if first is not None:
            raise first

    def __enter__(self) -> "Panels":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
