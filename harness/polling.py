"""Waiting in tests for something that happens on another thread or in another process."""

from __future__ import annotations

import time


def wait_for(pred, timeout: float = 20.0, step: float = 0.02) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
