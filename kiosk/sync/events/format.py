"""The check-in event's claim set: its fields, its types, and the checks a receiver makes before storing one.

The device writes the claims (:mod:`.outbox`); a receiver (the back end,
``kiosk-admin events``) checks every claim for type and range with
:func:`check_claims` before anything is stored, because a door's signing
key can be stolen: a signed event is genuine, not necessarily sane.
Sequence numbers fit in 64 bits, times are finite and within sane bounds,
strings are short and hold no NUL, no control character and no lone
surrogate (which neither SQLite nor PostgreSQL can store as text).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ...errors import EnvelopeError

#: Version of the claim set; a consumer can tell formats apart.
CLAIMS_VERSION = 1

#: Claims every event carries, in the order CSV prints them. Those the daemon
#: adds as ``extra`` (location_state, gallery_version, model_id) are null
#: when it does not.
CLAIM_FIELDS = (
    "event_id",
    "seq",
    "site",
    "device",
    "type",
    "outcome",
    "resident_id",
    "distance",
    "margin",
    "frames",
    "reason",
    "liveness",
    "location_state",
    "location_distance_m",
    "location_accuracy_m",
    "location_flagged",
    "method",
    "gallery_version",
    "model_id",
    "time",
    "v",
)

#: Claims the daemon adds for a site's estimate (kiosk.siteestimate), on face decisions and check-ins only
#: (absent elsewhere: every event would be larger).
SITE_CLAIMS = ("gap", "threshold", "fpir_target", "gallery_size", "face_alone", "retry_of")

#: Claims the daemon fills as ``extra`` (the rest are the outbox's own).
EXTRA_CLAIMS = frozenset({"location_state", "location_distance_m", "location_accuracy_m", "location_flagged",
                          "gallery_version", "model_id", *SITE_CLAIMS})

#: The event a door's proposal (enrollment at the door) travels in; its ``proposal`` claim is sealed to the admin.
PROPOSAL_EVENT = "enroll_proposed"
#: What a proposal is (its ``proposal_kind``): an enrollment at the door, filed under its invitation, or a door
#: template from a visit, filed under the visit's event id (claim ``visit``).
ENROLLMENT_PROPOSAL, DOOR_TEMPLATE_PROPOSAL = "enrollment", "door_template"

#: Event types that are check-ins (face and QR).
CHECKIN_TYPES = ("checkin", "qr")

#: Claims an event cannot be read without.
REQUIRED_CLAIMS = ("event_id", "seq", "site", "device", "type", "time")

#: Bounds of the numbers a receiver stores: a BIGINT column, and event times
#: from 2000-01-01 to 2100-01-01 (a door's clock can be wrong, not that wrong).
SEQ_MAX = 2**63 - 1
TIME_MIN = 946_684_800.0
TIME_MAX = 4_102_444_800.0
#: Nested claims (liveness scores, future additions) go this deep at most.
MAX_DEPTH = 4


def _plain_text(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and neither store a lone surrogate
    # (which pydantic refuses first).
    if _bad_text(value):
        raise ValueError("holds a control character")
    return value


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("is not a finite number")
    return value


Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Word = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_plain_text)]
Text = Annotated[str, Field(max_length=500), AfterValidator(_plain_text)]
Number = Annotated[float, AfterValidator(_finite)]


class EventClaims(BaseModel):
    """The claims of one event, as a receiver accepts them (strict: no type is coerced)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    event_id: Word
    seq: int = Field(ge=0, le=SEQ_MAX)
    site: Name
    device: Name
    type: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_]+$")]
    time: Annotated[float, AfterValidator(_finite), Field(ge=TIME_MIN, le=TIME_MAX)]
    outcome: Word | None = None
    resident_id: Word | None = None
    distance: Number | None = None
    margin: Number | None = None
    frames: int | None = Field(None, ge=0, le=SEQ_MAX)
    reason: Text | None = None
    liveness: dict[Word, Number | None] | None = Field(None, max_length=64)
    location_state: Word | None = None
    location_distance_m: Number | None = None
    location_accuracy_m: Number | None = None
    location_flagged: bool | None = None
    method: Word | None = None
    # The gallery's version number (the daemon sends it as text).
    gallery_version: Annotated[int, Field(ge=0, le=SEQ_MAX)] | Word | None = None
    model_id: Word | None = None
    # What a site's estimate needs (kiosk.siteestimate, docs/recognition.md): how far a face visit fell short of
    # the rule in force (rounded; never whom it came near), that rule's threshold, target and gallery size; on a
    # check-in a QR credential confirmed, whether the face alone named the resident; on a check-in after an
    # UNKNOWN visit whose nearest resident this was, that visit's event id (a resident's retry, not a stranger).
    gap: Number | None = None
    threshold: Number | None = None
    fpir_target: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    gallery_size: int | None = Field(None, ge=0, le=SEQ_MAX)
    face_alone: bool | None = None
    retry_of: Word | None = None
    v: int = Field(CLAIMS_VERSION, ge=1, le=1000)
    # A door's proposal (enroll_proposed events): sealed to the admin's key, which the receiver cannot open;
    # the invitation's nonce it answers (an enrollment's), and its kind (see kiosk.enrollment.proposal).
    proposal: Annotated[str, Field(min_length=1, max_length=65536, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    invitation: Annotated[str, Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    proposal_kind: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")] | None = None
    # A door template's proposal: the event id of the visit it came from (what the back end files it under).
    visit: Annotated[str, Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    # The evidence crop, base64 (the envelope's own size limit bounds it).
    evidence_jpeg: Annotated[str, Field(pattern=r"^[A-Za-z0-9+/=]*$")] | None = None


def check_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims if every one has its type and range; else :class:`EnvelopeError`.

    Its ``reason`` is ``missing_claims`` (a claim an event needs is absent)
    or ``bad_claims``; its message names the claim and what is wrong, never
    the value (a claim may be personal data).
    """
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing:
        raise _refuse("missing_claims", f"claim {missing[0]!r} missing")
    try:
        EventClaims.model_validate(claims)
    except ValidationError as e:
        first = e.errors(include_input=False, include_url=False)[0]
        where = ".".join(_printable_key(p) for p in first["loc"]) or "claims"
        kind = "missing_claims" if first["type"] == "missing" else "bad_claims"
        raise _refuse(kind, f"claim {where!r}: {first['msg']}") from None
    extra = {k: v for k, v in claims.items() if k not in EventClaims.model_fields}
    problem = _check_extra(extra, 1)
    if problem:
        raise _refuse("bad_claims", problem)
    return claims


def _check_extra(value: Any, depth: int, where: str = "claims") -> str | None:
    """What is wrong with a claim this version does not know (None: nothing): any JSON, sane and shallow."""
    if depth > MAX_DEPTH:
        return f"{where}: nested too deep"
    if isinstance(value, dict):
        for k, v in value.items():
            name = _printable_key(k)
            if _bad_text(k):
                return f"{where}: a claim name holds a control character or a lone surrogate"
            problem = _check_extra(v, depth + 1, name if where == "claims" else f"{where}.{name}")
            if problem:
                return problem
    elif isinstance(value, list):
        for i, v in enumerate(value):
            problem = _check_extra(v, depth + 1, f"{where}[{i}]")
            if problem:
                return problem
    elif isinstance(value, str):
        if len(value) > 500 or _bad_text(value):
            return f"claim {where!r}: longer than 500 characters, or holds a control character or a lone surrogate"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"claim {where!r}: is not a finite number"
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > SEQ_MAX:
            return f"claim {where!r}: does not fit in 64 bits"
    return None


def _bad_text(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def _printable_key(key: Any) -> str:
    text = str(key)
    if _bad_text(text) or len(text) > 40:
        return "?"
    return text


def _refuse(reason: str, message: str) -> EnvelopeError:
    err = EnvelopeError(f"{reason}: {message}")
    err.reason = reason
    return err


def printable(text: str, limit: int = 500) -> str:
    """``text`` as any store and any terminal can hold it: lone surrogates, NUL and other control characters
    escaped (``\\ud800``, ``\\x00``), and at most ``limit`` characters."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in safe):
        safe = "".join(ch if 0x20 <= ord(ch) != 0x7F else f"\\x{ord(ch):02x}" for ch in safe)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"
