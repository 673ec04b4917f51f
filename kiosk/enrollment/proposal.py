"""A door's proposal: descriptors of a resident's face, for the admin to approve, never applied by the door.

Sealed as events are (:func:`kiosk.sync.envelope.seal`: signed by the door's
key, then encrypted) but to the **admin's** key, with ``typ``
"kiosk-proposal+jwt". It travels inside an ``enroll_proposed`` event of the
door's outbox (claim ``proposal``; claims ``invitation`` (the invitation's
nonce) and ``proposal_kind`` beside it, for the back end), so it survives a
door that is offline. The back end stores it as it came, and cannot read it;
``kiosk-admin gallery review`` opens it with the admin's private key.

The claims::

    {"v": 1, "kind": "enrollment", "site": SITE, "device": DEVICE, "invitation": TOKEN,
     "resident_id": ID, "name": NAME or null, "templates": [base64url of 128 float32, ...],
     "model_id": MODEL, "time": WHEN, "frames": N, "liveness": {CUE: SCORE} or null}

A **door template** (issue 23 part 2, :mod:`kiosk.gallery.adapt`) goes the same
way, in an ``enroll_proposed`` event with ``proposal_kind`` "door_template" and
the claim ``visit`` (the event id of the check-in it came from, which the back
end files it under) instead of ``invitation``::

    {"v": 1, "kind": "door_template", "site": SITE, "device": DEVICE, "visit": EVENT_ID,
     "resident_id": ID, "templates": [one base64url descriptor], "model_id": MODEL, "time": WHEN,
     "frames": N, "method": "face+qr" or "face", "distance": D, "liveness": {CUE: SCORE} or null}

A proposal is a new input from the field: its claims are checked strictly
(:func:`check_proposal`) before anything reads them.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..errors import EnvelopeError, TokenRefused
from ..gallery.store import NAME_CHARS
from ..gallery.templates import DIMENSIONS
from ..sync.envelope import Opened, open_sealed, seal
from ..sync.events.format import DOOR_TEMPLATE_PROPOSAL, ENROLLMENT_PROPOSAL
from ..sync.keys import KeyRing, PartyKeys, public_key
from ..sync.updates.format import encode_template
from .invitation import RESIDENT, Invitation, read_invitation

PROPOSAL_TYP = "kiosk-proposal+jwt"
FORMAT_VERSION = 1
MAX_TEMPLATES = 8
#: A door template proposal carries this many descriptors at most (the visit's mean, usually one).
MAX_DOOR_TEMPLATES = 2
ENROLLMENT, DOOR_TEMPLATE = ENROLLMENT_PROPOSAL, DOOR_TEMPLATE_PROPOSAL
#: A sealed proposal is at most this long (the event claim's bound).
MAX_PROPOSAL_CHARS = 65536


def _template(value: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise ValueError("not base64url") from None
    v = np.frombuffer(raw, dtype="<f4") if len(raw) == 4 * DIMENSIONS else None
    if v is None or not np.all(np.isfinite(v)):
        raise ValueError(f"a template is {DIMENSIONS} finite float32")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Number = Annotated[float, AfterValidator(_finite)]
Template = Annotated[str, Field(max_length=700), AfterValidator(_template)]
Liveness = dict[Annotated[str, Field(max_length=32)], Number | None] | None


class _Proposed(BaseModel):
    """What every proposal says: which door, for whom, of which model, when, from how many frames."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    v: Literal[1]
    site: Name
    device: Name
    resident_id: Annotated[str, Field(pattern=RESIDENT.pattern)]
    model_id: Annotated[str, Field(min_length=1, max_length=64)]
    time: Annotated[Number, Field(ge=946_684_800.0, le=4_102_444_800.0)]
    frames: int = Field(ge=1, le=100_000)
    liveness: Liveness = Field(None, max_length=16)


class ProposalClaims(_Proposed):
    kind: Literal["enrollment"]
    invitation: Annotated[str, Field(min_length=1, max_length=1500, pattern=r"^[A-Za-z0-9_.-]+$")]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=f"^{NAME_CHARS}+$")] | None = None
    templates: Annotated[list[Template], Field(min_length=1, max_length=MAX_TEMPLATES)]


class DoorTemplateClaims(_Proposed):
    """A door template from a visit the door was sure of (:func:`kiosk.gallery.adapt.sure`)."""

    kind: Literal["door_template"]
    visit: Annotated[str, Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    templates: Annotated[list[Template], Field(min_length=1, max_length=MAX_DOOR_TEMPLATES)]
    method: Literal["face+qr", "face"]
    distance: Annotated[Number, Field(ge=0.0, le=4.0)]


@dataclass(frozen=True)
class Proposal:
    """An opened, checked proposal: who proposed it, for whom, and the descriptors."""

    claims: dict[str, Any]
    signer: str  # "site/device" of the door's key
    invitation: Invitation | None = None  # the admin's invitation inside, read (an enrollment's)

    @property
    def kind(self) -> str:
        return self.claims["kind"]

    @property
    def key(self) -> str:
        """What the back end files it under: the invitation's nonce, or the visit's event id."""
        return self.invitation.nonce if self.invitation is not None else self.claims["visit"]

    @property
    def resident_id(self) -> str:
        return self.claims["resident_id"]

    @property
    def templates(self) -> list[np.ndarray]:
        return [np.frombuffer(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)), dtype="<f4").astype(np.float32)
                for t in self.claims["templates"]]


def new_proposal(*, invitation: Invitation, site: str, device: str, descriptors: list[np.ndarray], model_id: str,
                 frames: int, liveness: dict[str, float] | None = None, now: float | None = None) -> dict[str, Any]:
    """The claims of an enrollment proposal (checked before they are returned)."""
    claims = {"v": FORMAT_VERSION, "kind": "enrollment", "site": site, "device": device,
              "invitation": invitation.token, "resident_id": invitation.resident_id, "name": invitation.name,
              "templates": [encode_template(d) for d in descriptors], "model_id": model_id,
              "time": round(time.time() if now is None else now, 3), "frames": frames,
              "liveness": {k: round(float(v), 6) for k, v in liveness.items() if math.isfinite(v)} if liveness
              else None}
    check_proposal(claims)
    return claims


def new_door_template(*, site: str, device: str, visit: str, resident_id: str, descriptors: list[np.ndarray],
                      model_id: str, frames: int, method: str, distance: float,
                      liveness: dict[str, float] | None = None, now: float | None = None) -> dict[str, Any]:
    """The claims of a door-template proposal (checked before they are returned)."""
    claims = {"v": FORMAT_VERSION, "kind": DOOR_TEMPLATE, "site": site, "device": device, "visit": visit,
              "resident_id": resident_id, "templates": [encode_template(d) for d in descriptors],
              "model_id": model_id, "time": round(time.time() if now is None else now, 3), "frames": frames,
              "method": method, "distance": round(float(distance), 6),
              "liveness": {k: round(float(v), 6) for k, v in liveness.items() if math.isfinite(v)} if liveness
              else None}
    check_proposal(claims)
    return claims


def seal_proposal(claims: dict[str, Any], door: PartyKeys, admin_public: PartyKeys) -> str:
    """Signed by the door's key, encrypted to the admin's (compact JWE)."""
    return seal(claims, door, public_key(admin_public.encryption), typ=PROPOSAL_TYP)


def check_proposal(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims if they hold to the format; :class:`EnvelopeError` (reason ``bad_claims``) naming what is wrong."""
    try:
        model = DoorTemplateClaims if isinstance(claims, dict) and claims.get("kind") == DOOR_TEMPLATE \
            else ProposalClaims
        model.model_validate(claims)
    except ValidationError as e:
        first = e.errors(include_input=False, include_url=False)[0]
        # A claim's name, or an index; a key inside a claim (a liveness cue's name) is the sender's, so "?".
        known = ProposalClaims.model_fields.keys() | DoorTemplateClaims.model_fields.keys()
        where = ".".join(str(p) if isinstance(p, int) or p in known else "?" for p in first["loc"])[:60] or "claims"
        err = EnvelopeError(f"bad_claims: proposal claim {where!r}: {first['msg']}")
        err.reason = "bad_claims"
        raise err from None
    return claims


def open_proposal(token: str, admin: PartyKeys, doors: KeyRing, *, invitation_id: str | None = None) -> Proposal:
    """Decrypt with the admin's private key, verify the door's signature, check the claims and the invitation.

    The invitation inside must be the admin's, for the resident and the site
    the proposal names (and, given ``invitation_id``, the one the back end
    filed it under), and the proposal must come from a door of that site,
    made before the invitation expired (with a minute's skew). A door
    template has no invitation: ``invitation_id`` is then the visit it was
    filed under, and must be the one it names. Raises
    :class:`EnvelopeError` with a ``reason``.
    """
    if len(token) > MAX_PROPOSAL_CHARS:
        raise _bad("malformed", "proposal too large")
    opened: Opened = open_sealed(token, admin, doors, typ=PROPOSAL_TYP)
    claims = check_proposal(opened.claims)
    if opened.signer != f"{claims['site']}/{claims['device']}":
        raise _bad("wrong_door", "signed by a door other than the one it names")
    if claims["kind"] == DOOR_TEMPLATE:
        if invitation_id is not None and claims["visit"] != invitation_id:
            raise _bad("wrong_visit", "filed under another visit")
        return Proposal(claims, opened.signer)
    try:
        inv = read_invitation(claims["invitation"], admin.public())
    except TokenRefused as e:
        raise _bad("bad_invitation", f"the invitation inside is not the admin's ({e.reason})") from None
    if inv.site != claims["site"] or inv.resident_id != claims["resident_id"]:
        raise _bad("bad_invitation", "the invitation is for another site or resident")
    if invitation_id is not None and inv.nonce != invitation_id:
        raise _bad("bad_invitation", "filed under another invitation")
    if claims["time"] > inv.expires_at + 60:
        raise _bad("bad_invitation", "made after the invitation expired")
    return Proposal(claims, opened.signer, inv)


def _bad(reason: str, message: str) -> EnvelopeError:
    err = EnvelopeError(f"{reason}: {message}")
    err.reason = reason
    return err
