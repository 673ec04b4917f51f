"""The door panel on gpiozero's mock pins: relay pulses, releases, LED and buzzer patterns."""

from __future__ import annotations

import time

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from kiosk.config import GpioSettings
from kiosk.door import Panel, SilentPanel, open_panel, release_relay
from kiosk.errors import GpioUnavailable
from kiosk.match.decide import Decision, Outcome
from pin_history import assert_history

RELAY, GREEN, RED, BUZZER, PIR, EXIT = 17, 27, 22, 23, 4, 5

PULSE = 0.4


def gpio(**kw) -> GpioSettings:
    base = dict(
        enabled=True,
        relay_pin=f"GPIO{RELAY}",
        relay_pulse_s=PULSE,
        green_led_pin=f"GPIO{GREEN}",
        red_led_pin=f"GPIO{RED}",
        buzzer_pin=f"GPIO{BUZZER}",
        pir_pin=f"GPIO{PIR}",
        exit_button_pin=f"GPIO{EXIT}",
    )
    base.update(kw)
    return GpioSettings(**base)


def decision(outcome: Outcome) -> Decision:
    return Decision(outcome=outcome, track_id=1, resident_id="r-1" if outcome is Outcome.ACCEPTED else None)


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def states(pin) -> list[bool]:
    return [s.state for s in pin.states]


def clear(factory, *pins):
    for p in pins:
        factory.pin(p).clear_states()


def test_relay_pulses_for_the_configured_time_on_accepted(factory):
    with Panel(gpio(), pin_factory=factory) as panel:
        relay = factory.pin(RELAY)
        assert relay.state is True  # active-low: high is shut
        relay.clear_states()
        panel.show(decision(Outcome.ACCEPTED))
        assert panel.door_open
        time.sleep(PULSE + 0.3)
        assert not panel.door_open
        assert_history(relay, [(0.0, True), (0.0, False), (PULSE, True)])
        assert len(relay.states) == 3


def test_active_high_relay_pulses_high(factory):
    with Panel(gpio(relay_active_low=False), pin_factory=factory) as panel:
        relay = factory.pin(RELAY)
        assert relay.state is False
        relay.clear_states()
        panel.show(decision(Outcome.ACCEPTED))
        time.sleep(PULSE + 0.3)
        assert_history(relay, [(0.0, False), (0.0, True), (PULSE, False)])
        assert len(relay.states) == 3


@pytest.mark.parametrize("outcome", [o for o in Outcome if o is not Outcome.ACCEPTED])
def test_relay_never_moves_on_other_outcomes(factory, outcome):
    with Panel(gpio(), pin_factory=factory) as panel:
        relay = factory.pin(RELAY)
        relay.clear_states()
        panel.show(decision(outcome))
        panel.error()
        time.sleep(0.1)
        assert states(relay) == [True]
        assert not panel.door_open


def test_second_accepted_extends_the_pulse_without_a_gap(factory):
    with Panel(gpio(), pin_factory=factory) as panel:
        relay = factory.pin(RELAY)
        relay.clear_states()
        panel.show(decision(Outcome.ACCEPTED))
        time.sleep(PULSE / 2)
        panel.show(decision(Outcome.ACCEPTED))
        time.sleep(PULSE + 0.3)
        assert_history(relay, [(0.0, True), (0.0, False), (1.5 * PULSE, True)])
        assert len(relay.states) == 3


def test_relay_left_active_by_a_crash_is_released_at_start(factory):
    # What a killed predecessor may leave behind: the relay line driven active.
    crashed = factory.pin(RELAY)
    crashed.function = "output"
    crashed.state = False  # active-low: door open
    crashed.close()
    assert crashed.state is False
    with Panel(gpio(), pin_factory=factory):
        assert factory.pin(RELAY).state is True
        assert states(factory.pin(RELAY))[-1] is True


def test_release_relay_after_a_crash(factory):
    # ExecStopPost=kiosk door release runs this after any kind of stop.
    pin = factory.pin(RELAY)
    pin.function = "output"
    pin.state = False
    pin.close()
    release_relay(gpio(), pin_factory=factory)
    assert pin.state is True
    # ...and lets go of the pin, so the next daemon can claim it.
    with Panel(gpio(), pin_factory=factory):
        pass


def test_close_during_a_pulse_releases_at_once_and_is_safe_twice(factory):
    panel = Panel(gpio(), pin_factory=factory)
    relay = factory.pin(RELAY)
    relay.clear_states()
    panel.show(decision(Outcome.ACCEPTED))
    assert relay.state is False
    t0 = time.monotonic()
    panel.close()
    assert time.monotonic() - t0 < 1.0  # against the pulse's 3 s
    assert relay.state is True
    panel.close()
    panel.show(decision(Outcome.ACCEPTED))  # after close: ignored, no error
    time.sleep(PULSE + 0.1)
    assert states(relay) == [True, False, True]
    # Every pin was given back.
    for pin in (RELAY, GREEN, RED, BUZZER):
        DigitalOutputDevice(pin, pin_factory=factory).close()


def test_constructor_failing_part_way_releases_what_it_claimed(factory):
    squatter = DigitalOutputDevice(f"GPIO{PIR}", pin_factory=factory)  # PIR pin busy
    try:
        with pytest.raises(GpioUnavailable, match="gpio.pir_pin"):
            Panel(gpio(), pin_factory=factory)
    finally:
        squatter.close()
    assert factory.pin(RELAY).state is True  # left released
    for pin in (RELAY, GREEN, RED, BUZZER):
        DigitalOutputDevice(pin, pin_factory=factory).close()  # free again


def test_bad_pin_name_is_a_gpio_error(factory):
    with pytest.raises(GpioUnavailable, match="gpio.green_led_pin"):
        Panel(gpio(green_led_pin="GPIO99"), pin_factory=factory)
    DigitalOutputDevice(RELAY, pin_factory=factory).close()


# Expected pin histories per outcome, as (seconds since previous change, level).
# The first entry is the state when history was cleared.
ON, OFF = True, False
PATTERNS = {
    Outcome.ACCEPTED: {
        GREEN: [(0, OFF), (0, ON), (PULSE, OFF)],
        RED: [(0, OFF)],
        BUZZER: [(0, OFF), (0, ON), (0.1, OFF)],
    },
    Outcome.DUPLICATE: {
        GREEN: [(0, OFF), (0, ON), (0.3, OFF), (0.3, ON), (0.3, OFF)],
        RED: [(0, OFF)],
        BUZZER: [(0, OFF), (0, ON), (0.1, OFF)],
    },
    Outcome.UNKNOWN: {
        GREEN: [(0, OFF)],
        RED: [(0, OFF), (0, ON), (2.0, OFF)],
        BUZZER: [(0, OFF), (0, ON), (0.1, OFF), (0.1, ON), (0.1, OFF)],
    },
    Outcome.QR_REFUSED: {
        GREEN: [(0, OFF)],
        RED: [(0, OFF), (0, ON), (2.0, OFF)],
        BUZZER: [(0, OFF), (0, ON), (0.1, OFF), (0.1, ON), (0.1, OFF)],
    },
    Outcome.SHOW_QR: {
        GREEN: [(0, OFF), (0, ON), (2.0, OFF)],
        RED: [(0, OFF), (0, ON), (2.0, OFF)],
        BUZZER: [(0, OFF), (0, ON), (0.1, OFF)],
    },
    Outcome.ENROLLING: {
        GREEN: [(0, OFF), (0, ON), (0.2, OFF), (0.2, ON), (0.2, OFF), (0.2, ON), (0.2, OFF)],
        RED: [(0, OFF), (0, ON), (0.2, OFF), (0.2, ON), (0.2, OFF), (0.2, ON), (0.2, OFF)],
        BUZZER: [(0, OFF)],
    },
    Outcome.ENROLL_PROPOSED: {
        GREEN: [(0, OFF), (0, ON), (1.0, OFF)],
        RED: [(0, OFF)],
        BUZZER: [(0, OFF), (0, ON), (0.1, OFF)],
    },
    Outcome.ENROLL_FAILED: {
        GREEN: [(0, OFF)],
        RED: [(0, OFF), (0, ON), (0.2, OFF), (0.2, ON), (0.2, OFF), (0.2, ON), (0.2, OFF)],
        BUZZER: [(0, OFF), (0, ON), (0.1, OFF)],
    },
    Outcome.TOO_POOR: {
        GREEN: [(0, OFF)],
        RED: [(0, OFF), (0, ON), (0.2, OFF), (0.2, ON), (0.2, OFF), (0.2, ON), (0.2, OFF)],
        BUZZER: [(0, OFF)],
    },
    Outcome.LOOK_AT_CAMERA: {
        GREEN: [(0, OFF), (0, ON), (0.2, OFF), (0.2, ON), (0.2, OFF), (0.2, ON), (0.2, OFF)],
        RED: [(0, OFF), (0, ON), (0.2, OFF), (0.2, ON), (0.2, OFF), (0.2, ON), (0.2, OFF)],
        BUZZER: [(0, OFF)],
    },
    Outcome.SPOOF: {
        GREEN: [(0, OFF)],
        RED: [(0, OFF), (0, ON), (2.0, OFF)],
        BUZZER: [(0, OFF), (0, ON), (0.6, OFF), (0.2, ON), (0.6, OFF)],
    },
    Outcome.REFUSED_LOCATION: {
        GREEN: [(0, OFF)],
        RED: [(0, OFF), (0, ON), (0.5, OFF), (0.5, ON), (0.5, OFF), (0.5, ON), (0.5, OFF)],
        BUZZER: [(0, OFF), (0, ON), (0.6, OFF)],
    },
}


def test_led_and_buzzer_patterns_per_outcome():
    # One panel per outcome, all at once, so the test takes as long as the
    # longest pattern rather than the sum.
    assert set(PATTERNS) == set(Outcome)
    panels = {}
    for outcome in PATTERNS:
        f = MockFactory()
        panels[outcome] = (f, Panel(gpio(), pin_factory=f))
    try:
        for outcome, (f, panel) in panels.items():
            clear(f, GREEN, RED, BUZZER)
            panel.show(decision(outcome))
        time.sleep(2.6)
        for outcome, (f, panel) in panels.items():
            for pin, expected in PATTERNS[outcome].items():
                got = f.pin(pin).states
                assert len(got) == len(expected), (outcome, pin, got)
                assert_history(f.pin(pin), expected)
    finally:
        for f, panel in panels.values():
            panel.close()
            f.reset()


def test_error_flashes_red_until_the_next_decision(factory):
    with Panel(gpio(), pin_factory=factory) as panel:
        clear(factory, GREEN, RED, BUZZER)
        panel.error()
        red = factory.pin(RED)
        # 0.1 s on, 0.9 s off, going on: three flashes in about 2 s (waited for, not slept: a busy machine).
        deadline = time.monotonic() + 10
        while len(states(red)) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert states(red)[:6] == [OFF, ON, OFF, ON, OFF, ON]
        assert_history(red, [(0, OFF), (0, ON), (0.1, OFF), (0.9, ON), (0.1, OFF), (0.9, ON)], prefix=True)
        beeps = [(0, OFF), (0, ON), (0.1, OFF), (0.1, ON), (0.1, OFF), (0.1, ON), (0.1, OFF)]
        assert_history(factory.pin(BUZZER), beeps)  # three beeps
        panel.show(decision(Outcome.ACCEPTED))  # the fault is over
        assert red.state is False
        n = len(red.states)
        time.sleep(1.2)
        assert len(red.states) == n  # stopped flashing
        panel.error()
        panel.clear()
        assert red.state is False


def test_pir_reports_someone_there(factory):
    with Panel(gpio(), pin_factory=factory) as panel:
        assert panel.someone_there is False
        factory.pin(PIR).drive_high()
        deadline = time.monotonic() + 2
        while not panel.someone_there and time.monotonic() < deadline:
            time.sleep(0.02)
        assert panel.someone_there is True
        factory.pin(PIR).drive_low()
        deadline = time.monotonic() + 2
        while panel.someone_there and time.monotonic() < deadline:
            time.sleep(0.02)
        assert panel.someone_there is False
    assert Panel(gpio(pir_pin=""), pin_factory=factory).someone_there is None


def test_exit_button_pulses_the_relay(factory):
    pressed = []
    with Panel(gpio(), pin_factory=factory, on_exit_button=lambda: pressed.append(1)):
        relay, button = factory.pin(RELAY), factory.pin(EXIT)
        assert button.state is True  # pulled up: released
        relay.clear_states()
        button.drive_low()
        button.drive_high()
        time.sleep(PULSE + 0.3)
        assert_history(relay, [(0.0, True), (0.0, False), (PULSE, True)])
        assert pressed == [1]


def test_without_optional_parts_only_the_relay_is_claimed(factory):
    settings = gpio(green_led_pin="", red_led_pin="", buzzer_pin="", pir_pin="", exit_button_pin="")
    with Panel(settings, pin_factory=factory) as panel:
        panel.show(decision(Outcome.UNKNOWN))
        panel.error()
        panel.show(decision(Outcome.ACCEPTED))
        assert panel.door_open
        for pin in (GREEN, RED, BUZZER, PIR, EXIT):
            DigitalOutputDevice(pin, pin_factory=factory).close()


def test_gpio_disabled_gives_a_silent_panel(factory):
    panel = open_panel(gpio(enabled=False), pin_factory=factory)
    assert isinstance(panel, SilentPanel)
    panel.show(decision(Outcome.ACCEPTED))
    panel.error()
    panel.close()
    panel.close()
    assert isinstance(open_panel(gpio(), pin_factory=factory), Panel)


def test_config_refuses_shared_pins():
    from kiosk.errors import ConfigError
    from kiosk.config import parse_config

    with pytest.raises(ConfigError, match="gpio"):
        parse_config('[gpio]\nenabled = true\nrelay_pin = "GPIO17"\nbuzzer_pin = "17"\n')
    with pytest.raises(ConfigError, match="gpio.pir_pin"):
        parse_config('[gpio]\npir_pin = "pin four"\n')
