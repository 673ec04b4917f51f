"""A running ``kiosk-ingest`` with two doors and an attacker's connection, for the tests of hostile messages.

door-1 is the attacker: its broker certificate (anyone who took the door
can publish on its topic) and, for the stolen-kiosk cases, its signing key.
door-2 is an honest door whose events must keep being stored meanwhile.
Every message is accounted for by the SHA-256 of its bytes (a refusal) or
its event id (a stored event).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from pathlib import Path

from harness.broker import MqttProbe
from harness.ingest_kit import IngestProcess, SimulatedSite, wait_for
from kiosk.backend.store import open_store
from kiosk.sync.envelope import seal
from systemd_tools import NotifySocket


class IngestRig:
    def __init__(self, broker, root: Path, store_url: str, *, watchdog_usec: int = 3_000_000, **ingest: object):
        self.fleet = SimulatedSite(root / "fleet", broker, 2)
        self.url = store_url
        self.notify = NotifySocket(root / "notify")
        self.config = self.fleet.ingest_config(store_url, **ingest)
        self.ingest = IngestProcess(self.config, root / "ingest.log",
                                    env={"NOTIFY_SOCKET": self.notify.address, "WATCHDOG_USEC": str(watchdog_usec)})
        self.enc = self.fleet.backend.public().encryption
        self._seq = itertools.count(1)
        self._probes: dict[str, MqttProbe] = {}
        self.store = None

    def start(self) -> "IngestRig":
        mark = len(self.ingest.log_text())
        self.ingest.start()
        assert self.ingest.wait_subscribed(mark), self.ingest.log_text()
        if self.store is None:
            self.store = open_store(self.url, migrate=False)
        return self

    def close(self) -> None:
        for p in self._probes.values():
            p.close()
        self.ingest.stop()
        if self.store is not None:
            self.store.close()
        self.notify.close()

    # -- what doors send ------------------------------------------------------------

    def topic(self, door: str) -> str:
        return f"kiosk/{self.fleet.site}/{door}/events"

    def claims(self, door: str, **kw) -> dict:
        seq = next(self._seq)
        return {"event_id": f"0190-rig-{door}-{seq}-{time.monotonic_ns()}", "seq": seq, "site": self.fleet.site,
                "device": door, "type": "checkin", "outcome": "ACCEPTED", "resident_id": "r-1",
                "time": time.time(), "v": 1, **kw}

    def sealed(self, door: str, claims: dict) -> str:
        return seal(claims, self.fleet.keys[door], self.enc)

    def publish(self, door: str, payload: str | bytes, *, topic_door: str | None = None, qos: int = 1,
                timeout: float = 5.0) -> str | None:
        """Publish on a door's topic with its certificate; returns the payload's SHA-256 (at QoS 0: None)."""
        probe = self._probes.get(door)
        if probe is None:
            probe = self._probes[door] = MqttProbe(self.fleet.broker, self.fleet.cn(door))
        data = payload.encode("latin-1") if isinstance(payload, str) else payload
        acked = probe.publish(self.topic(topic_door or door), data, qos=qos, timeout=timeout)
        if qos == 0:
            return None
        assert acked is not None, "no PUBACK"
        return hashlib.sha256(data).hexdigest()

    def genuine(self, door: str = "door-2", **kw) -> str:
        """An honest event from ``door``; returns its event id."""
        c = self.claims(door, **kw)
        self.publish(door, self.sealed(door, c))
        return c["event_id"]

    # -- what the store says ----------------------------------------------------------

    def stored_ids(self) -> set[str]:
        return {k[2] for k in self.store.event_keys()}

    def refusals(self, sha256: str | None = None) -> list[dict]:
        rows = self.store.refusals()
        return rows if sha256 is None else [r for r in rows if r["payload_sha256"] == sha256]

    def wait_stored(self, event_id: str, timeout: float = 20.0) -> bool:
        return wait_for(lambda: event_id in self.stored_ids(), timeout)

    def wait_refused(self, sha256: str, timeout: float = 20.0) -> list[dict]:
        wait_for(lambda: self.refusals(sha256), timeout)
        return self.refusals(sha256)
