"""Whether ``kiosk-ingest`` is storing: what its watchdog, its status line and ``kiosk-ingest --health`` say.

The service writes :data:`HEALTH_FILE` in its state folder at every beat.
It is ``ok`` while messages move (or none wait), and ``stalled`` once a
batch has waited longer than ``[ingest] stall_after_s`` to be stored: then
the systemd watchdog is no longer fed, so systemd restarts the service, and
``kiosk-ingest --health`` exits 1. A file that has not been written for a
while means the service is not running at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomicfile import write_atomic

#: The file's name, in ``[ingest] state_dir``.
HEALTH_FILE = "health.json"


@dataclass(frozen=True)
class Health:
    state: str  # "ok", "stalled" or "starting"
    checked_at: float
    pid: int
    stalled_for_s: float = 0.0
    last_error: str | None = None
    stored: int = 0
    refused: int = 0
    unstorable: int = 0

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def line(self) -> str:
        """One line for a person (the unit's STATUS= and ``--health``)."""
        counts = f"{self.stored} events stored, {self.refused} refused, {self.unstorable} unstorable"
        if self.state == "stalled":
            why = f": {self.last_error}" if self.last_error else ""
            return f"STALLED for {self.stalled_for_s:.0f} s, nothing stored or acknowledged{why} ({counts})"
        return f"{self.state}: {counts}"


def write_health(state_dir: Path, health: Health) -> None:
    write_atomic(Path(state_dir) / HEALTH_FILE, json.dumps(asdict(health), sort_keys=True) + "\n", mode=0o600)


def read_health(state_dir: Path) -> Health | None:
    try:
        data = json.loads((Path(state_dir) / HEALTH_FILE).read_text(encoding="utf-8"))
        return Health(**{k: data[k] for k in Health.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def check_health(state_dir: Path, *, max_age_s: float, now: float | None = None) -> tuple[bool, str]:
    """(healthy, what to print) from the file the running service writes."""
    health = read_health(state_dir)
    if health is None:
        return False, f"no readable {Path(state_dir) / HEALTH_FILE}: kiosk-ingest has not run here"
    age = (time.time() if now is None else now) - health.checked_at
    if age > max_age_s:
        return False, f"not running: the last health check was {age:.0f} s ago (pid {health.pid})"
    return health.ok, health.line()
