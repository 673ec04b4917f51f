"""A real gpsd, fed by gpsfake from NMEA logs that tests write.

``gpsfake`` makes a pseudo-terminal, starts gpsd on it (``-P PORT``: gpsd's
TCP port, on loopback) and feeds it the log once a client has connected,
one sentence every ``cycle`` seconds, over and over. Each gpsfake is
started in its own session and stopped by its PID at teardown (gpsd goes
with it).

Each gpsfake gets a directory of its own for gpsd's control socket
(``$TMPDIR/gpsfake-PID.sock``). In the shared ``/tmp`` a socket left by a
gpsd killed long ago, under a PID that comes round again, makes gpsfake add
its device to nobody: gpsd then listens but never reports a fix.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from kiosk.location import EARTH_RADIUS_M


def _checksum(body: str) -> str:
    return f"{functools.reduce(lambda a, c: a ^ ord(c), body, 0):02X}"


def sentence(body: str) -> str:
    return f"${body}*{_checksum(body)}\r\n"


def _dm(value: float, lat: bool) -> tuple[str, str]:
    hemi = ("N" if value >= 0 else "S") if lat else ("E" if value >= 0 else "W")
    v = abs(value)
    deg = int(v)
    minutes = (v - deg) * 60
    return (f"{deg:02d}{minutes:09.6f}" if lat else f"{deg:03d}{minutes:09.6f}"), hemi


def north_of(lat: float, lon: float, metres: float) -> tuple[float, float]:
    """The point ``metres`` due north (south if negative): its great-circle distance is exactly that."""
    return lat + math.degrees(metres / EARTH_RADIUS_M), lon


def fix(lat: float, lon: float, second: int, *, hdop: float = 0.9) -> str:
    """One second of a receiver with a 3D fix: GGA, GSA, RMC."""
    t = f"{8 + second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}.00"
    la, lh = _dm(lat, True)
    lo, oh = _dm(lon, False)
    return (
        sentence(f"GPGGA,{t},{la},{lh},{lo},{oh},1,08,{hdop:.1f},12.0,M,0.0,M,,")
        + sentence(f"GPGSA,A,3,01,02,03,04,05,06,07,08,,,,,{hdop * 1.6:.1f},{hdop:.1f},1.2")
        + sentence(f"GPRMC,{t},A,{la},{lh},{lo},{oh},0.0,0.0,150625,,,A")
    )


def no_fix(second: int) -> str:
    """One second of a receiver that sees too few satellites."""
    t = f"{8 + second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}.00"
    return (
        sentence(f"GPGGA,{t},,,,,0,00,99.9,,M,,M,,")
        + sentence("GPGSA,A,1,,,,,,,,,,,,,99.9,99.9,99.9")
        + sentence(f"GPRMC,{t},V,,,,,,,150625,,,N")
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeGps:
    """One gpsfake + gpsd pair playing a log in a loop."""

    def __init__(self, log: Path, *, cycle: float = 0.1):
        if shutil.which("gpsfake") is None:
            pytest.skip("gpsfake is not installed (scripts/bootstrap installs gpsd-clients)")
        self.log = log
        self.port = free_port()
        self.out = log.with_suffix(".out")
        # Short (a socket's path has 108 bytes) and new: no stale socket of another gpsd in it.
        self.sockets = Path(tempfile.mkdtemp(prefix="gf-"))
        with open(self.out, "wb") as out:
            # -q: quiet; -c: seconds between sentences (also keeps gpsfake from spinning).
            self.proc = subprocess.Popen(
                ["gpsfake", "-q", "-P", str(self.port), "-c", str(cycle), str(log)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "TMPDIR": str(self.sockets)},
            )
        self._wait_listening()

    def _wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gpsfake exited {self.proc.returncode}: {self.out.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gpsd did not listen on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            # gpsfake and the gpsd it started share the session it leads.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.sockets, ignore_errors=True)


@pytest.fixture
def gpsfake(tmp_path):
    """Start gpsd fed with an NMEA log: ``gpsfake(text) -> FakeGps`` (``.port``); stopped at teardown."""
    started: list[FakeGps] = []

    def start(nmea: str, *, cycle: float = 0.1) -> FakeGps:
        log = tmp_path / f"gps-{len(started)}.nmea"
        log.write_text(nmea)
        g = FakeGps(log, cycle=cycle)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()
