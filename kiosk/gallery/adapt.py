"""Door templates: which of a sure visit's descriptors may join a resident's templates, by policy (issue 23).

A resident is enrolled from photos (a phone picture, an ID photo) and judged by the door's camera, with its own
light, angle and lens. A *door template* is a descriptor the door took of the resident on a visit it was sure of
twice over, kept beside the enrolled ones so that the next visit is compared with how the door sees them.

This module is the policy alone, the same at the back end (which approves) and in the evaluation (which measures
it, :mod:`kiosk.evaluation.adaptation`). A door never applies it to itself: what it proposes goes to the back end
sealed, and only a signed gallery update changes what a door trusts.

**Sure twice over** (:func:`sure`): the visit's face and the resident's QR credential confirmed together on the
same track (``face+qr``; the face within the candidate rule's distance of the resident), or the face alone far
inside the threshold (``sure_margin`` under it) with the active check passed.

**Admitted** (:meth:`AdaptPolicy.admit`), in this order:

- ``anchor``: the descriptor is within ``anchor`` of one of the resident's **enrolled** templates. Door templates
  never anchor another, so no chain of visits can walk a resident's templates away from the enrolled ones: every
  door template stays within ``anchor`` of an enrolled template, whoever shows the resident's code, however often.
  The default is the calibrated threshold of the gallery's operating point: only a face that the face alone
  would name from the enrolled templates can add one.
- ``novelty``: a descriptor nearer than this to one of the resident's templates adds nothing (``nothing_new``).
- at most ``max_door_templates`` per resident: the oldest is replaced first.
- enrolled templates are never replaced, and every door template can be revoked by the admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Why a proposed door template was not admitted.
NOT_SURE = "not_sure"
NOT_ANCHORED = "not_anchored"
NOTHING_NEW = "nothing_new"


@dataclass(frozen=True)
class DoorTemplate:
    vector: np.ndarray
    added_at: float
    source: str = ""  # the visit's event id, for the admin's list and revocation


@dataclass
class Templates:
    """One resident's templates: enrolled (never replaced here) and door templates, oldest first."""

    enrolled: np.ndarray
    door: list[DoorTemplate] = field(default_factory=list)

    def all(self) -> np.ndarray:
        return np.vstack([self.enrolled, *[d.vector[None, :] for d in self.door]]) if self.door else self.enrolled


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str | None = None  # NOT_SURE, NOT_ANCHORED or NOTHING_NEW when refused
    replaced: DoorTemplate | None = None  # the oldest door template it replaced
    anchor_distance: float = float("nan")


def sure(method: str, *, face_distance: float, candidate_threshold: float, threshold: float, sure_margin: float,
         active_check_passed: bool = False) -> bool:
    """Whether a visit may propose a door template for the resident it was accepted as.

    ``face_distance``: the visit's face to that resident's nearest template (the door's own measure);
    ``method``: ``face+qr`` (a credential confirmed the face on its track) or ``face``.
    """
    if method == "face+qr":
        return face_distance <= candidate_threshold
    if method == "face":
        return active_check_passed and face_distance <= threshold - sure_margin
    return False


@dataclass(frozen=True)
class AdaptPolicy:
    anchor: float
    max_door_templates: int = 3
    novelty: float = 0.04

    def admit(self, templates: Templates, vector: np.ndarray, now: float, source: str = "") -> Admission:
        """Admit ``vector`` into ``templates`` (changing it) if the policy allows; say why not otherwise."""
        v = np.asarray(vector, dtype=np.float32)
        anchor = float(np.linalg.norm(templates.enrolled - v, axis=1).min())
        if anchor > self.anchor:
            return Admission(False, NOT_ANCHORED, anchor_distance=anchor)
        if self.max_door_templates <= 0 or float(np.linalg.norm(templates.all() - v, axis=1).min()) < self.novelty:
            return Admission(False, NOTHING_NEW, anchor_distance=anchor)
        replaced = templates.door.pop(0) if len(templates.door) >= self.max_door_templates else None
        templates.door.append(DoorTemplate(v, now, source))
        return Admission(True, None, replaced, anchor)


def effective_residents(residents: int, templates: int, per_resident: float) -> int:
    """The gallery size whose calibrated point a gallery of ``templates`` templates over ``residents`` residents
    takes: the calibration measured residents with ``per_resident`` templates each, and a stranger's chances grow
    with the templates to pass, so door templates count as residents' worth of templates (never fewer than the
    residents)."""
    if residents <= 0:
        return 0
    return max(residents, int(np.ceil(templates / max(per_resident, 1e-9))))
