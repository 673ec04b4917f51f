"""Looking for a provisioning (or reset) code in camera frames until one is taken.

The camera's capture thread fills its queue as usual; the scanner decodes
every Nth frame with zbar (a look costs about 0.1 s on a Pi), hands each
payload to ``take`` (which verifies and installs it), and tells the
installer about a refused code once per code, not once per frame.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from ..capture.base import Frame
from ..capture.qr import decode_qr
from ..errors import ProvisioningRefused

log = logging.getLogger(__name__)

T = TypeVar("T")


class CodeScanner(Generic[T]):
    """Finds codes in frames and offers them to ``take`` until one is taken.

    :param take: verifies and acts on a payload; returns a result or raises
        :class:`ProvisioningRefused`.
    :param every: decode every Nth frame offered.
    :param on_refused: called with the refusal (once per distinct code).
    """

    def __init__(self, take: Callable[[bytes], T], *, every: int = 3,
                 on_refused: Callable[[ProvisioningRefused], None] | None = None):
        self.take = take
        self.every = max(1, every)
        self.on_refused = on_refused
        self.frames = 0
        self.looks = 0
        self.refusals: list[ProvisioningRefused] = []
        self._refused: set[bytes] = set()

    def offer(self, frame: Frame) -> T | None:
        """Look at one frame (if it is its turn); the result once a code is taken."""
        self.frames += 1
        if (self.frames - 1) % self.every:
            return None
        self.looks += 1
        for payload in decode_qr(frame.image):
            digest = hashlib.sha256(payload).digest()
            if digest in self._refused:
                continue
            try:
                return self.take(payload)
            except ProvisioningRefused as e:
                self._refused.add(digest)
                self.refusals.append(e)
                log.warning("code refused (%s): %s", e.reason, e)
                if self.on_refused:
                    self.on_refused(e)
        return None


def scan(
    get_frame: Callable[[float], Frame | None],
    scanner: CodeScanner[T],
    *,
    stop: threading.Event | None = None,
    timeout: float | None = None,
    tick: Callable[[], None] | None = None,
    poll_s: float = 0.2,
) -> T | None:
    """Read frames with ``get_frame(timeout)`` until the scanner takes a code.

    Returns None when stopped, timed out, or the frames ran out. ``tick`` is
    called between frames (watchdog pings, status). A frame source that
    fails raises its error.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not (stop is not None and stop.is_set()):
        if deadline is not None and time.monotonic() > deadline:
            log.info("no code taken within %.0f s", timeout)
            return None
        if tick:
            tick()
        try:
            frame = get_frame(poll_s)
        except queue.Empty:
            continue
        if frame is None:
            log.info("frames ended after %d (%d looked at) without a code", scanner.frames, scanner.looks)
            return None
        result = scanner.offer(frame)
        if result is not None:
            return result
    return None
