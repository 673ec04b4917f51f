"""Doors under test: the real daemon fed clips on demand (:class:`Door`), and a door as far as its proposals go
(:class:`ProposingDoor`)."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from harness.ingest_kit import wait_for
from kiosk.backend.consumer import Event, check_message
from kiosk.backend.ingest import StoreSink
from kiosk.capture.base import BaseSource
from kiosk.config import parse_config
from kiosk.daemon import Kiosk
from kiosk.enrollment.proposal import DOOR_TEMPLATE
from kiosk.enrollment.door_templates import DoorTemplateProposer
from kiosk.match.decide import Decision, Outcome
from kiosk.match.models import MODEL_ID
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import seal
from kiosk.sync.events.outbox import Outbox


class Playlist(BaseSource):
    """A camera at the door as a file would give it (every frame, media time): an empty hallway, and a clip
    whenever one is played, a minute after the last (so that nothing of one showing carries to the next)."""

    def __init__(self, shape=(360, 640, 3)):
        super().__init__("doorway", live=False)
        self._empty = np.full(shape, 96, np.uint8)
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._t = 0.0

    def play(self, frames, fps: float) -> None:
        with self._lock:
            self._queue.append((None, 60.0))
            self._queue.extend((f, 1.0 / fps) for f in frames)

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._queue

    def _read(self):
        with self._lock:
            image, dt = self._queue.popleft() if self._queue else (None, None)
        if dt is None:
            time.sleep(0.03)
            dt = 0.1
        self._t += dt
        return self._frame((self._empty if image is None else image).copy(), self._t)


class Panel:
    motion_sensor = None

    def __init__(self):
        self.shown = []

    def show(self, d):
        self.shown.append(d)

    def clear(self):
        pass

    def error(self):
        pass

    def close(self):
        pass


class Door:
    def __init__(self, config):
        self.source = Playlist()
        self.panel = Panel()
        self.committed = []
        self.kiosk = Kiosk(config, source=self.source, panel=self.panel,
                           on_decision=lambda d, c: self.committed.append((d, c)))
        self.kiosk.start()
        self.runner = threading.Thread(target=self.kiosk.run, name="kiosk-under-test", daemon=True)
        self.runner.start()

    def play(self, frames, fps: float, until, timeout: float = 90.0) -> list:
        """Play a clip; the decisions committed from then until ``until(decisions)`` and the hallway is empty."""
        n = len(self.committed)
        self.source.play(frames, fps)
        assert wait_for(lambda: self.source.idle and until([d for d, _ in self.committed[n:]]), timeout), \
            [d.describe() for d, _ in self.committed[n:]]
        time.sleep(1.0)  # the empty hallway ends what is still open
        return [d for d, _ in self.committed[n:]]

    def stop(self):
        self.kiosk.request_stop()
        self.runner.join(15)
        self.kiosk.stop()


class ProposingDoor:
    """A door of the site as far as its proposals go: its gallery, its proposer, its outbox, and the way its events
    reach the back end's store (sealed to the back end as the publisher does, verified and stored as kiosk-ingest
    does)."""

    def __init__(self, root, name, admin, backend, gallery, site: str, point):
        root.mkdir(mode=0o700)
        self.name, self.admin, self.backend, self.gallery = name, admin, backend, gallery
        self.site, self.point = site, point
        self.keys = keymod.generate(f"{site}/{name}")
        config = parse_config(f'[device]\nsite = "{self.site}"\ndevice_id = "{name}"\nstate_dir = "{root}"\n'
                              "[door_templates]\nmin_interval_h = 0\n")
        self.proposer = DoorTemplateProposer(config, door=self.keys, admin=admin.public(), model_id=MODEL_ID)
        self.outbox = Outbox.open(root / "kiosk.db", site=self.site, device=name)
        self.track = 0

    def visit(self, resident: str, face: np.ndarray) -> str:
        """The resident's face and code accepted together (the check-in committed), and the door template it
        proposes committed after it; the visit's event id."""
        self.track += 1
        d = Decision(Outcome.ACCEPTED, self.track, resident_id=resident, distance=0.3, margin=0.1, frames=6,
                     method="face+qr", liveness={"blink": 0.8}, descriptor=face)
        checkin = self.outbox.commit(d, model_id=MODEL_ID)
        got = self.proposer.consider(d, checkin.event_id, self.gallery, self.point)
        assert got is not None, "the door was sure of this visit"
        event, extra = got
        self.outbox.commit(event, model_id=MODEL_ID, **extra)
        self.proposer.committed(resident)
        return checkin.event_id

    def checkin(self, resident: str) -> str:
        self.track += 1
        return self.outbox.commit(Decision(Outcome.ACCEPTED, self.track, resident_id=resident, frames=6),
                                  model_id=MODEL_ID).event_id

    def commit_proposal(self, resident: str, **extra) -> None:
        """An enroll_proposed event with these claims (what a door with a stolen or faulty key could send)."""
        self.track += 1
        method = "door_template" if extra.get("proposal_kind") == DOOR_TEMPLATE else "enrollment"
        self.outbox.commit(Decision(Outcome.ENROLL_PROPOSED, self.track, resident_id=resident, frames=6,
                                    method=method), model_id=MODEL_ID, **extra)

    def deliver(self, store) -> None:
        ring = keymod.KeyRing([self.keys.public()])
        pending = self.outbox.undelivered()
        to = keymod.public_key(self.backend.encryption)
        got = [check_message(f"kiosk/{self.site}/{self.name}/events", seal(c.claims, self.keys, to).encode(), self.backend,
                             ring, "kiosk") for c in pending]
        assert all(isinstance(e, Event) for e in got), got
        sink = StoreSink(store)
        sink.take(got, [])
        assert (sink.stored, sink.refused) == (len(got), 0)
        self.outbox.mark_delivered_many([c.seq for c in pending])

    def close(self) -> None:
        self.outbox.close()
