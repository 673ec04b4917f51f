"""Deciding the doors' proposals: what ``kiosk-admin gallery review`` and the console both run.

A proposal waits in the back end's store sealed to the admin's key. Here it is opened with the admin's private key
and checked (:func:`read`): the door's signature, the admin's own invitation inside (an enrollment), the resident
not erased since, the door and model it names. An enrollment is approved by a person (:func:`enroll`); a door
template by a person or by the policy (:func:`admit`, :func:`auto`), always against the **enrolled** templates of
the admin's own database. Deciding deletes the sealed descriptors from the back end's store
(:func:`kiosk.backend.proposals.decide`); nothing reaches a door but the signed gallery update that follows.

The admin's database and the back end's store are two databases: a proposal someone else decided meanwhile (the
console and the CLI, two admins) raises :class:`AlreadyDecided`, and what this decision had written to the admin's
database is taken back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .backend.proposals import APPROVED, PENDING, REJECTED, decide, erased_since, filed_for, is_pending, proposals
from .enrollment.proposal import DOOR_TEMPLATE, Proposal, open_proposal
from .errors import EnvelopeError
from .gallery.adapt import AdaptPolicy
from .gallery.store import GalleryStore, Resident
from .match.models import MODEL_ID


class AlreadyDecided(Exception):
    """The proposal was decided by someone else meanwhile; this decision changed nothing."""

    def __init__(self, key: str):
        super().__init__(f"proposal {key} was decided meanwhile by someone else: nothing was changed")
        self.key = key


@dataclass(frozen=True)
class Pending:
    """A pending proposal as opened and checked: ``problem`` says why it cannot be approved (None: it can)."""

    row: dict
    proposal: Proposal | None
    problem: str | None
    reject: bool = False  # the problem is one that must not wait (its resident erased): reject it now
    valid: bool = True  # False: it did not open, or does not hold together (the problem says how)

    @property
    def key(self) -> str:
        return self.row["invitation"]

    @property
    def kind(self) -> str:
        return self.row["kind"]

    @property
    def door(self) -> str:
        return f"{self.row['site']}/{self.row['device']}"

    @property
    def resident_id(self) -> str | None:
        return self.proposal.resident_id if self.proposal is not None else None

    @property
    def reason(self) -> str | None:
        """The problem's first word (``wrong_door``, ``erased`` …)."""
        return self.problem.split(" ")[0].rstrip(":") if self.problem else None

    @property
    def detail(self) -> str:
        """How the door came to propose it, in a few words."""
        if self.kind != DOOR_TEMPLATE:
            return "enrollment"
        if self.proposal is None:
            return "door template"
        c = self.proposal.claims
        return f"door template ({c['method']}, distance {c['distance']:.3f})"


def pending(backend, site: str, admin, ring) -> list[Pending]:
    """The site's pending proposals, oldest first, each opened and checked."""
    return [read(r, admin, ring, backend) for r in proposals(backend, status=PENDING) if r["site"] == site]


def read(row: dict, admin, ring, backend) -> Pending:
    try:
        p = open_proposal(row["proposal"], admin, ring, invitation_id=row["invitation"])
    except EnvelopeError as e:
        return Pending(row, None, str(e) if getattr(e, "reason", None) else f"refused: {e}", valid=False)
    c = p.claims
    if (c["site"], c["device"]) != (row["site"], row["device"]) or c["model_id"] != MODEL_ID:
        return Pending(row, p, "wrong_door (it names another door than the one that sent it, or descriptors of "
                               "another model)", valid=False)
    if not filed_for(backend, row, p.resident_id):
        return Pending(row, p, "wrong_resident (filed under another resident: erasing this one would not reach it)",
                       reject=True)
    since = p.invitation.issued_at if p.invitation is not None else c["time"]
    if erased_since(backend, p.resident_id, since):
        return Pending(row, p, "erased (the resident was erased after the "
                               + ("invitation was issued)" if p.invitation is not None else "visit)"), reject=True)
    return Pending(row, p, None)


def reject(backend, entry: Pending, note: str | None = None) -> bool:
    return decide(backend, entry.key, REJECTED, note=note)


def enroll(gallery: GalleryStore, backend, entry: Pending, name: str | None = None) -> str | None:
    """Approve an enrollment: its descriptors become the resident's templates. None, or why it cannot be yet."""
    assert entry.kind != DOOR_TEMPLATE and entry.problem is None and entry.proposal is not None
    p = entry.proposal
    rid = p.resident_id
    current = gallery.residents().get(rid)
    # The admin-signed invitation's name, never the door's copy of it: a door (its key stolen) could write anything
    # there, and a name no gallery update can carry would stop every later update of the site.
    invited = p.invitation.name if p.invitation is not None else None
    name = name or invited or (current.name if current else None)
    if not name:
        return f"resident {rid!r} has no display name yet"
    resident = Resident(rid, name, current.valid_from if current else None, current.valid_until if current else None)
    if not is_pending(backend, entry.key):
        raise AlreadyDecided(entry.key)
    sources = ["proposal:" + hashlib.sha256(v.astype("<f4").tobytes()).hexdigest() for v in p.templates]
    gallery.enroll(resident, list(zip(p.templates, sources)))
    if not decide(backend, entry.key, APPROVED):  # decided meanwhile: take back what was written
        if current is None:
            gallery.erase(rid)
        else:
            gallery.drop_templates(rid, sources)
        raise AlreadyDecided(entry.key)
    return None


def policy_for(match, gallery: GalleryStore, *, anchor: float | None = None,
               max_door_templates: int = AdaptPolicy.max_door_templates,
               novelty: float = AdaptPolicy.novelty) -> AdaptPolicy:
    """The door-template policy; the anchor by default the calibrated threshold at the gallery's size."""
    if anchor is None:
        from .match.calibration import operating_point

        anchor = operating_point(match, max(1, len(gallery.residents()))).threshold
    return AdaptPolicy(anchor, max_door_templates, novelty)


def admit(gallery: GalleryStore, policy: AdaptPolicy, backend, entry: Pending) -> str | None:
    """Decide a door template by the policy: approved and stored (None), or rejected with why (returned)."""
    assert entry.kind == DOOR_TEMPLATE
    verdict = entry.problem if entry.valid else f"not_valid ({entry.reason})"
    if verdict is None and entry.resident_id not in gallery.residents():
        verdict = "unknown_resident (not enrolled here, or erased since)"
    got = None
    if verdict is None:
        if not is_pending(backend, entry.key):
            raise AlreadyDecided(entry.key)
        for vector in entry.proposal.templates:
            got = gallery.admit_door_template(entry.resident_id, vector, entry.proposal.key, policy)
            if got.admitted:
                break
        if not got.admitted:
            verdict = f"{got.reason} (anchor distance {got.anchor_distance:.3f}, limit {policy.anchor:.3f})"
    if not decide(backend, entry.key, APPROVED if verdict is None else REJECTED, note=verdict):
        if got is not None and got.admitted:  # decided meanwhile: take it back, and what it replaced
            gallery.withdraw_door_template(entry.resident_id, entry.proposal.key, got.replaced)
        raise AlreadyDecided(entry.key)
    return verdict


def auto(gallery: GalleryStore, policy: AdaptPolicy, backend, entries: list[Pending]) -> list[tuple[Pending, str | None]]:
    """Decide every pending door template among ``entries`` by the policy (enrollments wait for a person); those
    someone else decided meanwhile are left out."""
    out = []
    for e in entries:
        if e.kind == DOOR_TEMPLATE:
            try:
                out.append((e, admit(gallery, policy, backend, e)))
            except AlreadyDecided:
                continue
    return out
