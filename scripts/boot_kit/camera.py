"""An IP camera on loopback: MJPEG over HTTP, showing a scene that can be changed or stalled.

A scene is a list of JPEG frames shown in a loop at ``fps``: a provisioning
code held up to the camera, or a shared clip of a resident at the door.
Stalling keeps every connection open and sends nothing, as a camera that
hangs does; new connections are accepted and get nothing either.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np


def clip_frames(video: Path, width: int = 640, max_frames: int = 300) -> list[bytes]:
    """The frames of a video as JPEGs, scaled to ``width`` pixels wide."""
    cap = cv2.VideoCapture(str(video))
    out = []
    while len(out) < max_frames:
        ok, img = cap.read()
        if not ok:
            break
        if img.shape[1] != width:
            img = cv2.resize(img, (width, round(img.shape[0] * width / img.shape[1])), interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    cap.release()
    if not out:
        raise ValueError(f"{video}: no frames")
    return out


def picture_frame(picture: Path, size: tuple[int, int] = (640, 480), fill: float = 0.95) -> bytes:
    """A picture (a QR code) held up to the camera: centred on white, ``fill`` of the height."""
    img = cv2.imread(str(picture), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{picture}: not a picture")
    w, h = size
    side = int(h * fill)
    img = cv2.resize(img, (side, side), interpolation=cv2.INTER_NEAREST)
    canvas = np.full((h, w, 3), 255, np.uint8)
    y, x = (h - side) // 2, (w - side) // 2
    canvas[y : y + side, x : x + side] = img
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


class MjpegCamera:
    """Serves ``/stream.mjpg`` on 127.0.0.1 (an ephemeral port unless given)."""

    def __init__(self, port: int = 0, fps: float = 2.0):
        self.fps = fps
        self._frames: list[bytes] = []
        self._scene = 0
        self._flowing = threading.Event()
        self._closed = False
        self.sent = 0
        self.connections = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i, scene = 0, None
                try:
                    while not camera._closed:
                        if not camera._flowing.wait(0.2):
                            continue
                        if scene != camera._scene:  # a new scene starts at its first frame
                            scene, i = camera._scene, 0
                        frames = camera._frames
                        jpg = frames[i % len(frames)]
                        i += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n")
                        camera.sent += 1
                        time.sleep(1.0 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="mjpeg-camera", daemon=True)
        self._thread.start()

    def show(self, frames: list[bytes], fps: float | None = None) -> None:
        """Show a new scene (and resume a stalled stream)."""
        if not frames:
            raise ValueError("a scene needs frames")
        self._frames = list(frames)
        if fps:
            self.fps = fps
        self._scene += 1
        self._flowing.set()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.server.shutdown()
        self.server.server_close()
