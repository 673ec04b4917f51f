"""The ``gpsd`` provider: a GPS receiver through gpsd's JSON protocol over TCP (no gps library needed)."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable

from .base import Fix

log = logging.getLogger(__name__)


class GpsdProvider:
    """Fixes from gpsd's JSON protocol (``?WATCH``), read on a thread named "gpsd".

    A lost connection is retried with back-off; meanwhile the last fix ages
    and the guard calls it stale. Reports without a 2D/3D fix (``mode`` < 2)
    are counted, not used.
    """

    name = "gpsd"
    refresh_s = 0.0

    def __init__(self, host: str, port: int, *, clock: Callable[[], float] = time.monotonic,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0, connect_timeout: float = 5.0):
        self.host, self.port = host, port
        self._clock = clock
        self._backoff = (backoff_initial, backoff_max)
        self._connect_timeout = connect_timeout
        self._fix: Fix | None = None
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # What happened, for status and tests.
        self.connects = 0
        self.reports = 0  # TPV reports read
        self.no_fix_reports = 0
        self.fixes = 0
        self.last_error: str | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gpsd", daemon=True)
            self._thread.start()

    def current(self) -> Fix | None:
        return self._fix

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        """Stop reading; safe to call twice."""
        self._stop.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(self._connect_timeout + 2)

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            try:
                self._session()
                delay = self._backoff[0]  # it worked for a while: start the back-off afresh
            except OSError as e:
                if self._stop.is_set():
                    break
                if self.last_error != str(e):
                    log.warning("gpsd at %s:%d: %s; retrying", self.host, self.port, e)
                self.last_error = str(e)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self._backoff[1])

    def _session(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout)
        with self._lock:
            self._sock = sock
        try:
            sock.settimeout(None)
            sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
            self.connects += 1
            self.last_error = None
            log.info("gpsd at %s:%d: connected", self.host, self.port)
            buf = b""
            while not self._stop.is_set():
                data = sock.recv(4096)
                if not data:
                    raise ConnectionError("gpsd closed the connection")
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._line(line)
                if len(buf) > 65536:  # no newline in 64 KiB: not gpsd
                    raise ConnectionError("garbage from gpsd")
        finally:
            with self._lock:
                self._sock = None
            sock.close()

    def _line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if not isinstance(msg, dict) or msg.get("class") != "TPV":
            return
        self.reports += 1
        lat, lon, mode = msg.get("lat"), msg.get("lon"), msg.get("mode", 0)
        if not isinstance(mode, int) or mode < 2 or not _finite(lat) or not _finite(lon):
            self.no_fix_reports += 1
            return
        acc = msg.get("eph")
        if not _finite(acc):
            epx, epy = msg.get("epx"), msg.get("epy")
            acc = max(epx, epy) if _finite(epx) and _finite(epy) else None
        self.fixes += 1
        self._fix = Fix(float(lat), float(lon), None if acc is None else float(acc), self._clock(), self.fixes, self.name)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
