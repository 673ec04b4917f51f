"""Checking a gpiozero mock pin's recorded history (not a test module)."""

from __future__ import annotations

import os

# gpiozero's own assert_states_and_times allows 50 ms. On a shared two-core CI
# machine a timer thread can wake later than that, so the tolerance here is
# wider (seconds, KIOSK_TIMING_TOLERANCE), while the states must match exactly.
TOLERANCE = float(os.environ.get("KIOSK_TIMING_TOLERANCE", "0.15"))


def assert_history(pin, expected: list[tuple[float, bool]], *, prefix: bool = False) -> None:
    """The pin went through exactly these (seconds since the previous change, state)
    steps (with ``prefix``: began with them)."""
    got = [(round(s.timestamp, 3), s.state) for s in pin.states]
    if prefix:
        got = got[: len(expected)]
    assert [s for _, s in got] == [s for _, s in expected], f"states {got}, expected {expected}"
    for (t, _), (want, _) in zip(got, expected):
        assert abs(t - want) <= TOLERANCE + 0.05 * want, f"times {got}, expected {expected}"
