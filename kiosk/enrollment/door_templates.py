"""The door's side of door templates: after a visit it was sure of twice over, propose the visit's descriptor.

The proposal (:func:`kiosk.enrollment.proposal.new_door_template`) is sealed to the admin's key, as an
enrollment's is, and committed to the outbox right after the check-in it came from, in an ``enroll_proposed``
event with ``proposal_kind`` "door_template" and the check-in's event id as ``visit``. The door never adds it
to its own gallery: only the admin's approval (:mod:`kiosk.admin.review`, by hand or by policy) and the signed
gallery update that follows change what a door trusts.

Sure twice over is :func:`kiosk.gallery.adapt.sure`: the face and the resident's QR credential confirmed
together on the same track (``face+qr``, the face within the candidate rule's ``match.threshold`` of the
resident), or the face alone ``sure_margin`` inside the operating point's threshold with the active check
passed. One proposal per resident per ``min_interval_h``: the door remembers its last ones, and after a
restart reads them back from its outbox (:meth:`~kiosk.sync.events.outbox.Outbox.last_proposals`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from ..config import KioskConfig
from ..gallery.adapt import sure
from ..gallery.store import Gallery
from ..match.decide import Decision, OperatingPoint, Outcome
from ..sync.keys import PartyKeys
from .proposal import DOOR_TEMPLATE, new_door_template, seal_proposal

log = logging.getLogger(__name__)

METHOD = "door_template"


class DoorTemplateProposer:
    def __init__(self, config: KioskConfig, *, door: PartyKeys, admin: PartyKeys, model_id: str,
                 wall_clock: Callable[[], float] = time.time, recent: dict[str, float] | None = None):
        self.config = config
        self.door, self.admin, self.model_id = door, admin, model_id
        self._wall = wall_clock
        self._last: dict[str, float] = dict(recent or {})  # resident -> when the door last proposed for them
        self.proposed = 0
        self.skipped: Counter[str] = Counter()  # why a visit did not propose: not_sure, too_soon

    def consider(self, d: Decision, visit: str, gallery: Gallery, point: OperatingPoint
                 ) -> tuple[Decision, dict] | None:
        """The event to commit after check-in ``visit`` (a decision and its extra claims), or None.

        Call :meth:`committed` once the event is stored: only then does it count, and start the interval."""
        s = self.config.door_templates
        if not s.enabled:  # turned off by a reload
            return None
        if (d.outcome is not Outcome.ACCEPTED or d.resident_id is None or d.descriptor is None
                or d.method not in ("face", "face+qr") or d.resident_id not in gallery.residents):
            return None
        rid, now = d.resident_id, self._wall()
        distance = resident_distance(gallery, d.descriptor, rid, means=self.config.match.mean_template, now=now)
        if not sure(d.method, face_distance=distance, candidate_threshold=self.config.match.threshold,
                    threshold=point.threshold, sure_margin=s.sure_margin,
                    active_check_passed=d.reason == "active_check"):
            self.skipped["not_sure"] += 1
            return None
        if now - self._last.get(rid, -math.inf) < s.min_interval_h * 3600:
            self.skipped["too_soon"] += 1
            return None
        claims = new_door_template(site=self.config.device.site, device=self.config.device.device_id, visit=visit,
                                   resident_id=rid, descriptors=[d.descriptor], model_id=self.model_id,
                                   frames=max(1, d.frames), method=d.method, distance=distance, liveness=d.liveness,
                                   now=now)
        sealed = seal_proposal(claims, self.door, self.admin)
        event = Decision(Outcome.ENROLL_PROPOSED, d.track_id, resident_id=rid, frames=d.frames, method=METHOD,
                         timestamp=d.timestamp)
        return event, {"proposal": sealed, "visit": visit, "proposal_kind": DOOR_TEMPLATE}

    def committed(self, resident_id: str) -> None:
        """The proposal :meth:`consider` made for ``resident_id`` is stored: the interval starts now."""
        self._last[resident_id] = self._wall()
        self.proposed += 1

    def status(self) -> dict:
        return {"enabled": self.config.door_templates.enabled, "proposed": self.proposed,
                **{f"skipped_{k}": v for k, v in sorted(self.skipped.items())}}


def resident_distance(gallery: Gallery, descriptor: np.ndarray, resident_id: str, *, means: bool,
                      now: float | None = None) -> float:
    """The descriptor's distance to one resident as the door measures it (nearest template, or their mean)."""
    return float(gallery.resident_distances(descriptor, now, means=means)[gallery.ids.index(resident_id)])


def open_proposer(config: KioskConfig, *, wall_clock: Callable[[], float] = time.time,
                  outbox=None) -> DoorTemplateProposer | None:
    """The proposer the config asks for, or None (off, enrollment at the door off, no MQTT or no admin key).

    ``outbox``: where the door's last proposals are read back from (a restart keeps the interval)."""
    from ..match.models import MODEL_ID
    from .session import sealing_keys

    if not (config.door_templates.enabled and config.enrollment.enabled and config.mqtt.enabled):
        return None
    keys = sealing_keys(config)
    if keys is None:
        return None
    recent = outbox.last_proposals(DOOR_TEMPLATE, wall_clock() - config.door_templates.min_interval_h * 3600) \
        if outbox is not None else None
    return DoorTemplateProposer(config, door=keys[0], admin=keys[1], model_id=MODEL_ID, wall_clock=wall_clock,
                                recent=recent)
