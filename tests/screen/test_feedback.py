"""The door's panels driven as one: the GPIO panel first, then the screen; a failing part stops nobody."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from kiosk.config import GpioSettings, ScreenSettings
from kiosk.door import Panel
from kiosk.feedback import Panels
from kiosk.match.decide import Decision, Outcome
from kiosk.screen.panel import DoorScreen

GPIO = GpioSettings(enabled=True, relay_pin="GPIO17", relay_pulse_s=0.5, green_led_pin="GPIO27", red_led_pin="GPIO22",
                    pir_pin="GPIO4")


class BrokenScreen:
    """A screen whose every call fails (a part that broke)."""

    def show(self, decision):
        raise RuntimeError("screen gone")

    error = clear = show

    def close(self):
        raise RuntimeError("screen gone")


@pytest.fixture
def factory():
    return MockFactory()


def test_the_door_opens_and_the_screen_welcomes(factory):
    door = Panel(GPIO, pin_factory=factory)
    screen = DoorScreen(ScreenSettings(enabled=True, port=0), names={"R-1": "Ada L."}.get).start()
    with Panels([door, screen]) as panels:
        panels.show(Decision(Outcome.ACCEPTED, 1, resident_id="R-1"))
        assert factory.pin(17).state is False  # active-low relay: driven low is open
        assert screen.state.view()["message"]["text"] == "Welcome, Ada L."
        assert panels.motion_sensor is door.motion_sensor and panels.door_open
        panels.door(queued=2)  # only the screen tells the door's state
        assert screen.state.view()["link"]["queued"] == 2
    assert not screen.server._thread.is_alive()
    assert factory.pin(17).state is True  # closing released the relay


def test_a_broken_screen_keeps_the_relay_and_lights_working(factory):
    door = Panel(GPIO, pin_factory=factory)
    panels = Panels([door, BrokenScreen()])
    with pytest.raises(RuntimeError, match="screen gone"):
        panels.show(Decision(Outcome.ACCEPTED, 1, resident_id="R-1"))
    assert door.door_open  # the relay was pulsed before the screen failed
    with pytest.raises(RuntimeError, match="screen gone"):
        panels.close()
    assert factory.pin(17).state is True  # and released when closing, whatever the screen did


def test_without_a_screen_the_daemon_keeps_its_one_panel(resident_state):
    from kiosk.config import parse_config
    from kiosk.daemon import Kiosk

    factory = MockFactory()
    door = Panel(GPIO, pin_factory=factory)
    kiosk = Kiosk(parse_config(f'[device]\nstate_dir = "{resident_state}"\n[logging]\njournald = false\n'),
                  panel=door, source=_one_frame())
    kiosk.start()
    try:
        assert kiosk.panel is door and kiosk.screen is None
        assert kiosk.screen_status() == "off"
    finally:
        kiosk.stop()


def _one_frame():
    import numpy as np

    from kiosk.capture.replay import ReplaySource

    return ReplaySource([np.zeros((48, 64, 3), np.uint8)], live=False)


def test_a_taken_screen_port_leaves_the_door_working(resident_state, caplog):
    """Something else on the screen's port: the door still opens, the status and the journal say why."""
    import socket

    from kiosk.config import parse_config
    from kiosk.daemon import Kiosk

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        door = Panel(GPIO, pin_factory=MockFactory())
        kiosk = Kiosk(parse_config(f'[device]\nstate_dir = "{resident_state}"\n[logging]\njournald = false\n'
                                   f"[screen]\nenabled = true\nport = {port}\n"), panel=door, source=_one_frame())
        kiosk.start()
        try:
            assert kiosk.panel is door and kiosk.screen is None
            assert f"screen.port = {port}" in kiosk.screen_error
            assert "SCREEN UNAVAILABLE" in kiosk._status_line()
            assert kiosk._status_fields()["screen"] == "unavailable"  # in the retained MQTT status too
            assert "door screen unavailable" in caplog.text
        finally:
            kiosk.stop()
