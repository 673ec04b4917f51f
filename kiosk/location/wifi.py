"""The ``wifi`` provider: the access points seen now against a fingerprint taken at installation."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomicfile import write_atomic
from ..errors import ConfigError
from .base import Fix, ServiceLocation

log = logging.getLogger(__name__)


def iw_scan(interface: str, *, timeout: float = 20.0) -> dict[str, float]:
    """Access points seen (BSSID -> signal dBm) by ``iw``; a fresh scan when allowed, else the cached one."""
    for args in (["iw", "dev", interface, "scan"], ["iw", "dev", interface, "scan", "dump"]):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"cannot run {' '.join(args)}: {e}") from e
        if out.returncode == 0:
            return parse_iw_scan(out.stdout)
    raise RuntimeError(f"iw could not scan on {interface}: {out.stderr.strip()}")


def parse_iw_scan(text: str) -> dict[str, float]:
    seen: dict[str, float] = {}
    bssid = None
    for line in text.splitlines():
        s = line.strip()
        if line.startswith("BSS "):
            bssid = s[4:21].lower()
            seen[bssid] = -100.0
        elif bssid and s.startswith("signal:"):
            try:
                seen[bssid] = float(s.split()[1])
            except (IndexError, ValueError):
                pass
    return seen


def take_fingerprint(scan: Callable[[], dict[str, float]], path: Path, *, scans: int = 3) -> dict[str, Any]:
    """Scan a few times and keep the access points seen (written 0644 as JSON)."""
    seen: dict[str, list[float]] = {}
    for _ in range(scans):
        for bssid, rssi in scan().items():
            seen.setdefault(bssid, []).append(rssi)
    if not seen:
        raise RuntimeError("no access points seen: a Wi-Fi fingerprint needs some")
    fp = {"v": 1, "taken_at": int(time.time()),
          "access_points": {b: round(sum(r) / len(r), 1) for b, r in sorted(seen.items())}}
    write_atomic(path, json.dumps(fp, indent=2) + "\n", mode=0o644)
    return fp


def similarity(fingerprint: dict[str, float], seen: dict[str, float]) -> float:
    """Share of the fingerprint's access points seen now (0..1)."""
    return len(set(fingerprint) & set(seen)) / len(fingerprint) if fingerprint else 0.0


class WifiProvider:
    """The service location while enough of the installation's access points are seen."""

    name = "wifi"

    def __init__(self, service: ServiceLocation, fingerprint: dict[str, float], scan: Callable[[], dict[str, float]],
                 *, min_similarity: float, accuracy_m: float, interval_s: float,
                 clock: Callable[[], float] = time.monotonic):
        if not fingerprint:
            raise ConfigError("location.wifi_fingerprint lists no access points")
        self.service, self.fingerprint, self._scan = service, fingerprint, scan
        self.min_similarity, self.accuracy_m, self.refresh_s = min_similarity, accuracy_m, interval_s
        self._clock = clock
        self._fix: Fix | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scans = 0
        self.last_similarity: float | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wifi", daemon=True)
            self._thread.start()

    def scan_once(self) -> None:
        try:
            seen = self._scan()
        except RuntimeError as e:
            log.warning("wifi scan failed: %s", e)
            self._fix = None
            return
        self.scans += 1
        self.last_similarity = similarity(self.fingerprint, seen)
        if self.last_similarity >= self.min_similarity and self.service.known:
            s = self.service
            self._fix = Fix(s.latitude, s.longitude, self.accuracy_m, self._clock(), self.scans, self.name)
        else:
            self._fix = None

    def current(self) -> Fix | None:
        return self._fix

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scan_once()
            self._stop.wait(self.refresh_s)
