"""The door and what the resident sees and hears: relay, LEDs, buzzer, PIR, exit button.

Everything goes through gpiozero, so the same code drives lgpio on a Pi and
gpiozero's MockFactory in tests; the pin factory is handed in, never set
globally. The relay is the one output that matters for safety:

- it is driven inactive when the panel is built, before anything else;
- it is only ever switched on by ``blink(n=1)``, gpiozero's own timer thread,
  which switches it off again after ``relay_pulse_s``;
- :meth:`Panel.close` switches it off first, and ``kiosk door release`` (the
  unit's ``ExecStopPost=``) does the same after a crash or a watchdog kill.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from .config import GpioSettings
from .errors import GpioUnavailable
from .match.decide import Decision, Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Blink:
    """``n`` times on for ``on_s`` and off for ``off_s`` (``n=None``: until told otherwise)."""

    on_s: float
    off_s: float = 0.0
    n: int | None = 1


@dataclass(frozen=True)
class Signal:
    """What the green LED, the red LED and the buzzer do for one outcome.

    ``None`` means off. A green blink of ``on_s=0`` lasts as long as the door
    relay pulse.
    """

    green: Blink | None = None
    red: Blink | None = None
    beep: Blink | None = None


#: The key for :meth:`Panel.error` in :data:`SIGNALS`.
ERROR = "ERROR"

SIGNALS: dict[Outcome | str, Signal] = {
    # Door open: green for as long as the relay is pulsed, one short beep.
    Outcome.ACCEPTED: Signal(green=Blink(0.0), beep=Blink(0.1)),
    # Already checked in a moment ago: two green flashes, one beep, door stays shut.
    Outcome.DUPLICATE: Signal(green=Blink(0.3, 0.3, 2), beep=Blink(0.1)),
    # Not a resident: red for two seconds, two short beeps.
    Outcome.UNKNOWN: Signal(red=Blink(2.0), beep=Blink(0.1, 0.1, 2)),
    # Face too small, blurred or cut off: three quick red flashes, silent.
    Outcome.TOO_POOR: Signal(red=Blink(0.2, 0.2, 3)),
    # Look at the camera: amber (both LEDs) flashing, silent.
    Outcome.LOOK_AT_CAMERA: Signal(green=Blink(0.2, 0.2, 3), red=Blink(0.2, 0.2, 3)),
    # A photo or a screen: red for two seconds, two long beeps.
    Outcome.SPOOF: Signal(red=Blink(2.0), beep=Blink(0.6, 0.2, 2)),
    # The device is not at its service location: slow red flashes, one long beep.
    Outcome.REFUSED_LOCATION: Signal(red=Blink(0.5, 0.5, 3), beep=Blink(0.6)),
    # A resident's QR code was refused (expired, used, other site, forged): as UNKNOWN.
    Outcome.QR_REFUSED: Signal(red=Blink(2.0), beep=Blink(0.1, 0.1, 2)),
    # The face is one of a few residents: show your QR code (second factor): amber, one short beep.
    Outcome.SHOW_QR: Signal(green=Blink(2.0), red=Blink(2.0), beep=Blink(0.1)),
    # Enrollment at the door: taking descriptors (amber, silent); sent for approval (one green flash, one
    # beep; the door stays shut); not finished (as TOO_POOR, one beep).
    Outcome.ENROLLING: Signal(green=Blink(0.2, 0.2, 3), red=Blink(0.2, 0.2, 3)),
    Outcome.ENROLL_PROPOSED: Signal(green=Blink(1.0), beep=Blink(0.1)),
    Outcome.ENROLL_FAILED: Signal(red=Blink(0.2, 0.2, 3), beep=Blink(0.1)),
    # Out of order (camera lost, stage hung): red flashes until cleared, three beeps.
    ERROR: Signal(red=Blink(0.1, 0.9, None), beep=Blink(0.1, 0.1, 3)),
}


def _import_gpiozero():
    try:
        import gpiozero
    except ImportError as e:  # pragma: no cover - a dependency
        raise GpioUnavailable(f"gpiozero is not installed: {e}") from e
    return gpiozero


class Panel:
    """The door relay and the resident-facing feedback, built from ``[gpio]``.

    :param pin_factory: a gpiozero pin factory (``MockFactory`` in tests);
        ``None`` lets gpiozero choose (lgpio on a Pi).
    :param on_exit_button: called (on gpiozero's thread) after the exit
        button has pulsed the relay.
    """

    def __init__(
        self,
        settings: GpioSettings,
        pin_factory=None,
        on_exit_button: Callable[[], None] | None = None,
    ):
        gz = _import_gpiozero()
        self.settings = settings
        self._lock = threading.Lock()
        self._closed = False
        self._devices: list = []
        self._on_exit_button = on_exit_button
        self.relay = self.green = self.red = self.buzzer = None
        self.motion_sensor = self.exit_button = None
        key = "relay_pin"
        try:
            # The relay first: whatever a crashed predecessor left, it is
            # driven inactive before anything else happens.
            self.relay = self._claim(
                gz.DigitalOutputDevice,
                settings.relay_pin,
                active_high=not settings.relay_active_low,
                initial_value=False,
                pin_factory=pin_factory,
            )
            key = "green_led_pin"
            if settings.green_led_pin:
                self.green = self._claim(gz.LED, settings.green_led_pin, pin_factory=pin_factory)
            key = "red_led_pin"
            if settings.red_led_pin:
                self.red = self._claim(gz.LED, settings.red_led_pin, pin_factory=pin_factory)
            key = "buzzer_pin"
            if settings.buzzer_pin:
                self.buzzer = self._claim(
                    gz.Buzzer,
                    settings.buzzer_pin,
                    active_high=not settings.buzzer_active_low,
                    pin_factory=pin_factory,
                )
            key = "pir_pin"
            if settings.pir_pin:
                self.motion_sensor = self._claim(gz.MotionSensor, settings.pir_pin, pin_factory=pin_factory)
            key = "exit_button_pin"
            if settings.exit_button_pin:
                self.exit_button = self._claim(
                    gz.Button, settings.exit_button_pin, pull_up=True, bounce_time=0.05, pin_factory=pin_factory
                )
                self.exit_button.when_pressed = self._exit_pressed
        except gz.GPIOZeroError as e:
            self.close()
            raise GpioUnavailable(f"gpio.{key} = {getattr(settings, key)!r}: {e}") from e
        except BaseException:
            self.close()
            raise
        log.info(
            "door panel ready: relay %s (%s), pulse %.1f s",
            settings.relay_pin,
            "active-low" if settings.relay_active_low else "active-high",
            settings.relay_pulse_s,
        )

    def _claim(self, cls, pin: str, **kw):
        dev = cls(pin, **kw)
        self._devices.append(dev)
        return dev

    # -- what the daemon calls ------------------------------------------------

    def show(self, decision: Decision) -> None:
        """Open the door on ACCEPTED and signal the outcome of any decision."""
        with self._lock:
            if self._closed:
                return
            if decision.outcome is Outcome.ACCEPTED:
                self._pulse_locked()
            # An outcome added later without a signal of its own shows as a refusal.
            self._play(SIGNALS.get(decision.outcome, SIGNALS[Outcome.UNKNOWN]))

    def error(self) -> None:
        """Signal "out of order" until :meth:`clear` or the next decision."""
        with self._lock:
            if not self._closed:
                self._play(SIGNALS[ERROR])

    def clear(self) -> None:
        """Switch the LEDs and buzzer off (the relay keeps its timer)."""
        with self._lock:
            if not self._closed:
                self._play(Signal())

    def pulse(self) -> None:
        """Open the door for ``relay_pulse_s`` seconds."""
        with self._lock:
            if not self._closed:
                self._pulse_locked()

    @property
    def someone_there(self) -> bool | None:
        """What the PIR says, or ``None`` without one."""
        ms = self.motion_sensor
        if ms is None or self._closed:
            return None
        return bool(ms.motion_detected)

    @property
    def door_open(self) -> bool:
        return bool(self.relay is not None and not self._closed and self.relay.value)

    def close(self) -> None:
        """Release the relay, then every pin. Safe to call twice."""
        with self._lock:
            self._closed = True
            devices, self._devices = self._devices, []
        if self.relay is not None and self.relay in devices:
            try:
                self.relay.off()  # stops the pulse timer and drives inactive
            except Exception:  # pragma: no cover - closing must go on
                log.exception("could not switch the door relay off")
        for dev in reversed(devices):
            try:
                dev.close()
            except Exception:  # pragma: no cover
                log.exception("could not release %r", dev)

    def __enter__(self) -> "Panel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inside ---------------------------------------------------------------

    def _pulse_locked(self) -> None:
        # gpiozero's blink thread switches the relay off after on_time; a new
        # pulse restarts the timer without a gap.
        self.relay.blink(on_time=self.settings.relay_pulse_s, off_time=0, n=1, background=True)
        log.info("door: relay pulsed for %.1f s", self.settings.relay_pulse_s)

    def _play(self, signal: Signal) -> None:
        for dev, blink in ((self.green, signal.green), (self.red, signal.red), (self.buzzer, signal.beep)):
            if dev is None:
                continue
            if blink is None:
                dev.off()
                continue
            on = blink.on_s or self.settings.relay_pulse_s
            if dev is self.buzzer:
                dev.beep(on_time=on, off_time=blink.off_s, n=blink.n, background=True)
            else:
                dev.blink(on_time=on, off_time=blink.off_s, n=blink.n, background=True)

    def _exit_pressed(self) -> None:
        log.info("door: exit button pressed")
        self.pulse()
        if self._on_exit_button is not None:
            self._on_exit_button()


class SilentPanel:
    """The panel of a kiosk without GPIO (``gpio.enabled = false``): logs only."""

    motion_sensor = None
    someone_there = None
    door_open = False

    def show(self, decision: Decision) -> None:
        log.debug("no door panel: %s", decision.outcome.value)

    def error(self) -> None:
        pass

    def clear(self) -> None:
        pass

    def pulse(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "SilentPanel":
        return self

    def __exit__(self, *exc) -> None:
        pass


def open_panel(settings: GpioSettings, pin_factory=None, **kw) -> Panel | SilentPanel:
    """A :class:`Panel` when ``gpio.enabled``, else a :class:`SilentPanel`."""
    return Panel(settings, pin_factory=pin_factory, **kw) if settings.enabled else SilentPanel()


def release_relay(settings: GpioSettings, pin_factory=None) -> None:
    """Drive the door relay inactive and let go of it (after a crash)."""
    gz = _import_gpiozero()
    try:
        relay = gz.DigitalOutputDevice(
            settings.relay_pin,
            active_high=not settings.relay_active_low,
            initial_value=False,
            pin_factory=pin_factory,
        )
    except gz.GPIOZeroError as e:
        raise GpioUnavailable(f"gpio.relay_pin = {settings.relay_pin!r}: {e}") from e
    relay.close()


# -- `kiosk door` ------------------------------------------------------------


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "door",
        help="release or test the door relay",
        description="Door relay tools for installers and for the systemd unit (ExecStopPost=).",
    )
    p.add_argument("--config", metavar="FILE", help="kiosk config file (default: built-in defaults)")
    p.add_argument("action", choices=["release", "pulse"], help="release: drive the relay inactive; pulse: open once")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import time

    from .config import load_config

    cfg = load_config(args.config)
    if not cfg.gpio.enabled:
        print("kiosk door: gpio.enabled is false: nothing to do")
        return 0
    if args.action == "release":
        release_relay(cfg.gpio)
        print(f"kiosk door: relay {cfg.gpio.relay_pin} released")
        return 0
    with Panel(cfg.gpio) as panel:
        panel.show(Decision(outcome=Outcome.ACCEPTED, track_id=0))
        print(f"kiosk door: relay {cfg.gpio.relay_pin} pulsed for {cfg.gpio.relay_pulse_s:.1f} s")
        time.sleep(cfg.gpio.relay_pulse_s + 0.2)
    return 0
