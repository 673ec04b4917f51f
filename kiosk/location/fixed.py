"""The ``fixed`` provider: the service location, confirmed by the installer on site."""

from __future__ import annotations

import time
from collections.abc import Callable

from .base import Fix, ServiceLocation


class FixedProvider:
    """The service location, confirmed by the installer: always a fresh, exact fix."""

    name = "fixed"
    refresh_s = 0.0

    def __init__(self, service: ServiceLocation, clock: Callable[[], float] = time.monotonic):
        self.service = service
        self._clock = clock

    def start(self) -> None:
        pass

    def current(self) -> Fix | None:
        if not self.service.known:
            return None
        return Fix(self.service.latitude, self.service.longitude, 0.0, self._clock(), 1, self.name)

    def close(self) -> None:
        pass
