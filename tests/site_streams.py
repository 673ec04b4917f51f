"""A door's events as its daemon commits them (Decision ─▶ SiteEvidence claims ─▶ Outbox), from real gaps.

The visits' gaps are real (:mod:`realgaps`); how many of each kind a site sees is set by the test: strangers
(UNKNOWN, never retried), residents accepted by the face, and residents turned away who retry with the QR
credential (UNKNOWN, then a QR check-in naming it).
"""

from __future__ import annotations

import itertools

from kiosk.backend.store import Incoming
from kiosk.config import MatchSettings, OutboxSettings
from kiosk.db import open_database
from kiosk.match.calibration import operating_point
from kiosk.match.decide import Decision, Outcome
from kiosk.match.site import SiteEvidence
from kiosk.sync.events.outbox import Outbox

RESIDENTS = 10
TARGET = 0.001


def in_force(target: float = TARGET):
    return operating_point(MatchSettings(fpir_target=target), RESIDENTS)


def door_events(tmp_path, site: str, device: str, *, strangers: list, residents: int = 0, retries: list = (),
                start: float, step: float = 30.0, target: float = TARGET) -> list[dict]:
    """The claims of every event a door commits for these visits, in order (``step`` seconds apart)."""
    clock = itertools.count(start, step)
    now = [start]

    def wall():
        return now[0]

    db = open_database(tmp_path / f"{site}-{device}.db")
    box = Outbox(db, site=site, device=device, settings=OutboxSettings(), wall_clock=wall)
    evidence, point = SiteEvidence(), in_force(target)

    def commit(d: Decision) -> None:
        now[0] = next(clock)
        c = box.commit(d, **evidence.claims(d, point, RESIDENTS, now[0]))
        evidence.committed(d, c.event_id, now[0])

    track = itertools.count(1)
    for i, gap in enumerate(strangers):
        commit(Decision(Outcome.UNKNOWN, next(track), distance=0.5, frames=3, gap=gap, nearest=f"r-{i % RESIDENTS}"))
        if i % 7 == 0 and residents:
            residents -= 1
            commit(Decision(Outcome.ACCEPTED, next(track), resident_id=f"r-{(i + 3) % RESIDENTS}", distance=0.3,
                            frames=3, gap=-0.05))
    for _ in range(residents):
        commit(Decision(Outcome.ACCEPTED, next(track), resident_id="r-5", distance=0.3, frames=3, gap=-0.05))
    for i, gap in enumerate(retries):
        rid = f"r-{i % RESIDENTS}"
        commit(Decision(Outcome.UNKNOWN, next(track), distance=0.45, frames=3, gap=gap, nearest=rid))
        commit(Decision(Outcome.ACCEPTED, 0, resident_id=rid, method="qr"))
    claims = [c.claims for c in box.all()]
    db.close()
    return claims


def incoming(claims: list[dict]) -> list[Incoming]:
    return [Incoming(c, received_at=c["time"] + 1) for c in claims]
