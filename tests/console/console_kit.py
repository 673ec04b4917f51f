"""What the console's tests share: a console on a fresh store, accounts, and logging in (not a test module)."""

from __future__ import annotations

import re
from pathlib import Path

from kiosk.console.accounts import Accounts
from kiosk.console.app import create_app
from kiosk.console.config import parse_console_config
from kiosk.console.service import open_console

ADMIN, VIEWER = "ada", "vic"
PASSWORD = "correct horse battery"


def console_config(tmp: Path, store_url: str, *, site: str = "elm-court", extra: str = ""):
    return parse_console_config(
        f'[console]\nstate_dir = "{tmp / "console"}"\nsite = "{site}"\ntimezone = "Asia/Shanghai"\n'
        f'login_failures = 3\n[store]\nurl = "{store_url}"\n[gallery]\nstate_dir = "{tmp / "gallery"}"\n'
        + ("" if "[broker]" in extra else "[broker]\nenabled = false\n") + extra)


def make_console(tmp: Path, store_url: str, **kw):
    (tmp / "console").mkdir(parents=True, exist_ok=True)
    console = open_console(console_config(tmp, store_url, **kw), publish=False)
    accounts = Accounts(console.store)
    accounts.create(ADMIN, PASSWORD, "admin", actor="test", remote="local")
    accounts.create(VIEWER, PASSWORD, "viewer", actor="test", remote="local")
    app = create_app(console)
    app.config["TESTING"] = True
    return console, app


def proposing_console(tmp: Path, store_url: str, faces, site: str):
    """A console holding the admin's key, r-hu enrolled from one photo of :data:`conftest.HU`; and a door of the
    site (harness.door_kit.ProposingDoor, its key among the console's devices) whose gallery holds r-hu and r-wen:
    (console, app, admin keys, door). Close the door, then the console."""
    import numpy as np

    from conftest import HU, WEN
    from harness.door_kit import ProposingDoor
    from kiosk.gallery.store import Gallery, Resident
    from kiosk.match.decide import OperatingPoint
    from kiosk.sync import keys as keymod

    console, app = make_console(tmp, store_url, site=site)
    admin, backend = keymod.generate("admin"), keymod.generate(keymod.BACKEND)
    console.admin_key = admin
    devices = console.config.path(console.config.keys.devices)
    devices.mkdir(parents=True, exist_ok=True)
    gallery = Gallery({"r-hu": Resident("r-hu", "Hu"), "r-wen": Resident("r-wen", "Wen")}, ["r-hu", "r-wen"],
                      np.vstack([faces[HU][0], faces[WEN][0]]))
    door = ProposingDoor(tmp / "door-1", "door-1", admin, backend, gallery, site,
                         OperatingPoint(threshold=0.40, margin=0.05, visit_threshold=0.38))
    keymod.save_public(devices / f"{site}.door-1.pub.jwks", door.keys)
    console.residents.gallery.enroll(Resident("r-hu", "Hu"), [(faces[HU][0], "photo-0")])
    return console, app, admin, door


def token(html: str) -> str:
    m = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def login(client, username: str, password: str = PASSWORD):
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token(page)})


# -- a served console, and a door that people walk up to ------------------------------------------------------------

class Served:
    """The console's app served by waitress on a free loopback port, in a thread (stopped by :meth:`close`)."""

    def __init__(self, console):
        import threading

        from waitress.server import create_server

        self.console = console
        self.server = create_server(create_app(console), host="127.0.0.1", port=0, threads=4)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, name="console-under-test", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.close()
        self.thread.join(10)
        self.console.close()


class Door:
    """The real daemon at a door whose camera sees an empty hallway, and a visit whenever one is played."""

    def __init__(self, config, visit_frames, fps: float = 15.0):
        import threading
        from collections import deque

        import numpy as np

        from kiosk.capture.base import BaseSource
        from kiosk.daemon import Kiosk

        door = self

        class Doorway(BaseSource):
            def __init__(self):
                super().__init__("doorway", live=True)
                self.empty = np.full(visit_frames[0].shape, 96, np.uint8)
                self.queue: deque = deque()
                self.next = 0.0

            def _read(self):
                import time

                now = time.monotonic()
                if self.next > now:
                    time.sleep(self.next - now)
                self.next = max(now, self.next) + 1.0 / fps
                with door._lock:
                    image = self.queue.popleft() if self.queue else self.empty
                return self._frame(image.copy(), time.monotonic())

        self.visit_frames = visit_frames
        self._lock = threading.Lock()
        self.decisions: list = []
        self.doorway = Doorway()
        self.kiosk = Kiosk(config, source=self.doorway, on_decision=lambda d, c: self._decided(d))
        self.kiosk.start()
        self.runner = threading.Thread(target=self.kiosk.run, name="kiosk-under-test", daemon=True)
        self.runner.start()

    def _decided(self, decision) -> None:
        with self._lock:
            self.decisions.append(decision)

    def visit(self, timeout: float = 60.0, frames=None) -> list:
        """The person of ``visit_frames`` (or ``frames``) walks up; the decisions of that visit."""
        import time

        with self._lock:
            n = len(self.decisions)
            self.doorway.queue.extend(self.visit_frames if frames is None else frames)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.decisions) > n and not self.doorway.queue:
                    break
            time.sleep(0.1)
        time.sleep(2.0)  # the empty hallway ends the visit
        with self._lock:
            return self.decisions[n:]

    def stop(self) -> None:
        self.kiosk.request_stop()
        self.runner.join(15)
        self.kiosk.stop()
