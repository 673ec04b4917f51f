"""Helpers for checking unit files with the real systemd-analyze, and a stand-in for systemd's notify socket (not a test module)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "kiosk.service"


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (scripts/bootstrap installs it)")
    return exe


def host_unit_dir() -> Path:
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(d, "sysinit.target").exists():
            return Path(d)
    pytest.skip("no systemd unit directory on this machine")


def make_verify_root(root: Path, executables: tuple[str, ...] = ("/opt/kiosk/venv/bin/kiosk",)) -> Path:
    """A root that ``systemd-analyze verify --root`` can load kiosk.service in.

    It holds the distribution's own units (sysinit.target and friends), the
    binaries the unit names, and stand-ins for the ones that ``install.sh``
    would create (the venv's ``kiosk``) when they are not there yet.
    """
    units = root / "usr/lib/systemd/system"
    if not units.exists():
        shutil.copytree(host_unit_dir(), units, symlinks=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    if not (root / "bin").exists():
        (root / "bin").symlink_to("usr/bin")
    if not (root / "usr/bin/kill").exists():
        shutil.copy2(shutil.which("kill") or "/bin/kill", root / "usr/bin/kill")
    for exe in executables:
        p = root / exe.lstrip("/")
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("#!/bin/sh\nexit 0\n")
            p.chmod(0o755)
    return root


def verify(root: Path, unit: str = "kiosk.service") -> subprocess.CompletedProcess:
    """Run ``systemd-analyze verify`` on a unit installed in ``root``."""
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", f"--root={root}", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )


def exposure(unit_path: Path) -> float:
    """The overall exposure ``systemd-analyze security --offline=yes`` gives a unit file."""
    r = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--no-pager", str(unit_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    assert m, f"no exposure level in:\n{r.stdout}\n{r.stderr}"
    return float(m.group(1))


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, by ``Section.Key`` (repeated keys kept in order)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


class NotifySocket:
    """A datagram socket standing in for systemd's: records (time, fields) per message."""

    def __init__(self, path: Path | None = None, abstract: str | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.sock.bind("\0" + abstract)
            self.address = "@" + abstract
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, name="notify-socket", daemon=True)
        self._thread.start()

    def _recv(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def times(self, field: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [t for t, fields in list(self.messages) if field in fields and since <= t <= until]

    def wait_for(self, field: str, timeout: float, since: float = 0.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.times(field, since)
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {field} within {timeout} s; got {self.messages}")

    def statuses(self) -> list[str]:
        return [f[7:] for _, fields in list(self.messages) for f in fields if f.startswith("STATUS=")]

    def close(self):
        self._stop.set()
        self.sock.close()
        self._thread.join(2)
