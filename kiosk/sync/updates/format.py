"""Gallery updates: what an admin sends a site's devices, and how a device takes it.

An update is a JSON claim set (:class:`GalleryUpdate`): the target (site,
optionally devices), a strictly increasing ``version``, the ``base`` version
it applies on (or ``"snapshot"``: the whole gallery), issue time and expiry,
the SHA-256 the gallery must hash to afterwards, and operations ``upsert``
(id, name, templates, validity) and ``erase`` (id).

On the wire, each layer does one job::

    claims ──sign──▶ compact JWS (Ed25519, typ kiosk-gallery+jwt, the admin's kid)
           ──encrypt──▶ JWE JSON (A256GCM; one ECDH-ES+A256KW recipient per device)
           ──frame──▶ {"v":2,"head":JWS} then {"v":2,"sha256":…,"part":i,"data":…} messages

so the broker sees neither names nor templates. Trust comes from the
signatures alone, checked against the admins' pinned public keys. The head
(:class:`UpdateHead`, compact JWS, ``typ`` kiosk-gallery-head+jwt) is small
and signed by the admin: it names the update (site, devices, version, times)
and its size, SHA-256 and the SHA-256 of every part, so that a device keeps
no byte of a part, and decrypts nothing, that an admin did not announce
(anyone may encrypt to a device: its key is public).

A refusal is an :class:`~kiosk.errors.UpdateRejected` whose ``reason`` is
one of :data:`REASONS`; its message never holds a name, a template or a
resident id, since acknowledgements travel signed but not encrypted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, Union

import numpy as np
from joserfc import jwe as rfc_jwe
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ...config import GallerySettings
from ...errors import UpdateRejected
from ...gallery.store import NAME_CHARS
from ...gallery.templates import DIMENSIONS
from ..envelope import sign_compact, verify_compact
from ..keys import CONTENT_ENC, KEY_ALG, Key, KeyRing, PartyKeys

GALLERY_TYP = "kiosk-gallery+jwt"
HEAD_TYP = "kiosk-gallery-head+jwt"
ACK_TYP = "kiosk-gallery-ack+jwt"
FORMAT_VERSION = 1
#: The frames' format: 2 since updates are announced by a signed head.
FRAME_FORMAT = 2
#: Bytes a part frame takes beside its data (its other fields).
_FRAME_ROOM = 200
SNAPSHOT = "snapshot"

#: Why an update was refused (the ``reason`` in an ack) and what it means.
REASONS = {
    "too_large": "a message or the whole update is over the configured size",
    "malformed": "not a gallery message (not JSON, not a frame, not a JWE or JWS)",
    "unannounced": "a part of an update no admin-signed head announced (nothing of it is kept)",
    "checksum_mismatch": "a part, or the parts put together, do not hash to the head's SHA-256",
    "head_mismatch": "the update does not say what its signed head says (id, site, devices, version, times)",
    "parts_missing": "not every part arrived within gallery.part_timeout_s",
    "wrong_recipient": "not encrypted to this device's key",
    "not_decryptable": "the ciphertext does not decrypt (truncated or tampered)",
    "wrong_type": "a signed message of another kind",
    "unknown_signer": "signed by a key that is not a pinned admin key",
    "bad_signature": "the signature does not verify",
    "schema": "the claims do not follow the update format",
    "unknown_operation": "an operation other than upsert or erase",
    "bad_template": "a template that is not 128 finite float32 values",
    "duplicate_resident": "the same resident twice in one update",
    "wrong_site": "for another site",
    "not_for_this_device": "for other devices of this site",
    "expired": "past its expiry",
    "not_yet_valid": "issued in the future",
    "replayed": "this update was already applied",
    "rollback": "a version at or below the one held",
    "version_gap": "applies on a version this device does not have yet (a snapshot is asked for)",
    "base_mismatch": "applies on an older version than the one held (a snapshot is asked for)",
    "digest_mismatch": "the gallery would not hash to the admin's digest (nothing applied; a snapshot is asked for)",
    "storage": "the database refused the change (nothing applied)",
    "looser_match": "a match target that is not stricter than the device's own (a device never loosens)",
    "internal": "the device failed while applying it, a fault of its own (nothing applied; its journal says more)",
}

TEMPLATE_BYTES = DIMENSIONS * 4
_TEMPLATE_CHARS = -(-TEMPLATE_BYTES * 4 // 3)  # base64url, no padding
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ID = r"^[A-Za-z0-9_.-]{1,64}$"
_HEX64 = r"^[0-9a-f]{64}$"


def reject(reason: str, message: str) -> UpdateRejected:
    assert reason in REASONS, reason
    return UpdateRejected(reason, f"{reason}: {message}")


# -- the claim set -------------------------------------------------------------


def encode_template(vector: np.ndarray) -> str:
    """A template as base64url (no padding) of 128 little-endian float32."""
    v = np.asarray(vector, dtype="<f4")
    if v.shape != (DIMENSIONS,) or not np.all(np.isfinite(v)):
        raise ValueError(f"a template is {DIMENSIONS} finite numbers")
    return base64.urlsafe_b64encode(v.tobytes()).rstrip(b"=").decode("ascii")


def _template(value: Any) -> bytes:
    def bad(msg: str) -> PydanticCustomError:
        return PydanticCustomError("bad_template", msg)

    if not isinstance(value, str):
        raise bad("a template is a base64url string")
    if len(value) != _TEMPLATE_CHARS:
        raise bad(f"a template is {_TEMPLATE_CHARS} base64url characters ({DIMENSIONS} float32), not {len(value)}")
    if not _B64URL.fullmatch(value):
        raise bad("a template is base64url without padding")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != value:
        raise bad("a template's base64url is not canonical")
    if not np.all(np.isfinite(np.frombuffer(raw, dtype="<f4"))):
        raise bad("a template holds NaN or infinite values")
    return raw


Template = Annotated[bytes, PlainValidator(_template)]
ResidentId = Annotated[str, Field(pattern=_ID)]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=f"^{NAME_CHARS}+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Upsert(_Strict):
    """Add a resident, or replace their name, validity and every template."""

    op: Literal["upsert"]
    id: ResidentId
    name: Name
    templates: list[Template] = Field(min_length=1)
    valid_from: FiniteFloat | None = None
    valid_until: FiniteFloat | None = None

    @model_validator(mode="after")
    def _checks(self, info):
        limits = (info.context or {}).get("limits")
        if limits is not None and len(self.templates) > limits.max_templates_per_resident:
            raise PydanticCustomError(
                "schema", "more than {n} templates for one resident", {"n": limits.max_templates_per_resident}
            )
        if self.valid_from is not None and self.valid_until is not None and self.valid_until <= self.valid_from:
            raise PydanticCustomError("schema", "valid_until must be after valid_from")
        return self

    def vectors(self) -> list[np.ndarray]:
        return [np.frombuffer(t, dtype="<f4").astype(np.float32) for t in self.templates]


class Erase(_Strict):
    """Erase a resident: templates, row and delivered check-ins."""

    op: Literal["erase"]
    id: ResidentId


Operation = Annotated[Union[Upsert, Erase], Field(discriminator="op")]


class MatchCap(_Strict):
    """A stricter operating point for the site's doors (``kiosk-admin gallery match``): a device takes it only
    if it is at least as strict as its own target, and keeps it until a stricter one comes."""

    fpir_target: float = Field(gt=0.0, le=1.0)


class GalleryUpdate(_Strict):
    """One gallery update, as signed by an admin."""

    v: Literal[1]
    update_id: Annotated[str, Field(pattern=_ID)]
    site: Annotated[str, Field(pattern=_ID)]
    devices: list[Annotated[str, Field(pattern=_ID)]] | None = Field(None, min_length=1)
    version: int = Field(ge=1, le=2**53)
    base: Annotated[int, Field(ge=0)] | Literal["snapshot"]
    iat: FiniteFloat
    exp: FiniteFloat
    digest: Annotated[str, Field(pattern=_HEX64)]
    ops: list[Operation]
    match: MatchCap | None = None

    @model_validator(mode="after")
    def _checks(self):
        if self.exp <= self.iat:
            raise PydanticCustomError("schema", "exp must be after iat")
        if self.base != SNAPSHOT and self.base >= self.version:
            raise PydanticCustomError("schema", "base must be below version")
        if self.snapshot and any(isinstance(op, Erase) for op in self.ops):
            raise PydanticCustomError("schema", "a snapshot lists the whole gallery: upserts only")
        first: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            if op.id in first:
                raise PydanticCustomError(
                    "duplicate_resident", "ops[{i}] names the same resident as ops[{j}]", {"i": i, "j": first[op.id]}
                )
            first[op.id] = i
        return self

    @property
    def snapshot(self) -> bool:
        return self.base == SNAPSHOT

    @property
    def kind(self) -> str:
        return SNAPSHOT if self.snapshot else "delta"


class UpdateHead(_Strict):
    """What an admin signs about an update before a device keeps any of it (the first frame)."""

    v: Literal[1]
    update_id: Annotated[str, Field(pattern=_ID)]
    site: Annotated[str, Field(pattern=_ID)]
    devices: list[Annotated[str, Field(pattern=_ID)]] | None = Field(None, min_length=1)
    version: int = Field(ge=1, le=2**53)
    base: Annotated[int, Field(ge=0)] | Literal["snapshot"]
    iat: FiniteFloat
    exp: FiniteFloat
    size: int = Field(ge=1)
    sha256: Annotated[str, Field(pattern=_HEX64)]
    parts: list[Annotated[str, Field(pattern=_HEX64)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _checks(self):
        if self.exp <= self.iat:
            raise PydanticCustomError("schema", "exp must be after iat")
        if len(self.parts) > self.size:
            raise PydanticCustomError("schema", "more parts than bytes: a part is never empty")
        return self

    @property
    def snapshot(self) -> bool:
        return self.base == SNAPSHOT

    @property
    def kind(self) -> str:
        return SNAPSHOT if self.snapshot else "delta"

    def announces(self, update: "GalleryUpdate") -> bool:
        """The update is the one this head names (same id, target, version, base and times)."""
        return all(getattr(self, k) == getattr(update, k)
                   for k in ("update_id", "site", "devices", "version", "base", "iat", "exp"))


_TYPE_REASONS = {"union_tag_invalid": "unknown_operation", "bad_template": "bad_template",
                 "duplicate_resident": "duplicate_resident"}


def _strict_json(data: bytes | str) -> Any:
    """JSON without NaN/Infinity and without repeated keys (two readers could disagree on them)."""

    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"key {k[:40]!r} appears twice")
            out[k] = v
        return out

    def constant(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(data, object_pairs_hook=pairs, parse_constant=constant)


def parse_update(payload: bytes | str, limits: GallerySettings | None = None) -> GalleryUpdate:
    """Check a claim set (JSON text) against the format; raise :class:`UpdateRejected` with the reason."""
    try:
        data = _strict_json(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise reject("malformed", f"claims are not strict JSON: {e}") from None
    try:
        return GalleryUpdate.model_validate(data, context={"limits": limits or GallerySettings()})
    except ValidationError as e:
        errors = e.errors(include_input=False, include_url=False)
        reason = _TYPE_REASONS.get(errors[0]["type"], "schema")
        shown = [f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg'][:120]}" for err in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise reject(reason, "; ".join(shown) + more) from None


# -- building and sealing (the admin's side) -----------------------------------


def upsert_op(resident, vectors: Iterable[np.ndarray]) -> dict[str, Any]:
    op = {"op": "upsert", "id": resident.id, "name": resident.name, "templates": [encode_template(v) for v in vectors]}
    if resident.valid_from is not None:
        op["valid_from"] = float(resident.valid_from)
    if resident.valid_until is not None:
        op["valid_until"] = float(resident.valid_until)
    return op


def erase_op(resident_id: str) -> dict[str, Any]:
    return {"op": "erase", "id": resident_id}


def new_update(
    *, site: str, version: int, base: int | str, ops: list[dict], digest: str, devices: list[str] | None = None,
    lifetime_s: float = 7 * 86400, now: float | None = None, update_id: str | None = None,
    match: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The claim set of an update (checked against the format before it is returned)."""
    iat = time.time() if now is None else now
    claims = {"v": FORMAT_VERSION, "update_id": update_id or str(uuid.uuid4()), "site": site, "version": version,
              "base": base, "iat": round(iat, 3), "exp": round(iat + lifetime_s, 3), "digest": digest, "ops": ops}
    if devices is not None:
        claims["devices"] = sorted(devices)
    if match is not None:
        claims["match"] = match
    GalleryUpdate.model_validate(claims, context={"limits": GallerySettings(max_templates_per_resident=1000)})
    return claims


def seal_update(claims: dict[str, Any], admin: PartyKeys, recipients: Iterable[Key]) -> str:
    """Sign ``claims`` with the admin's key and encrypt them to each device's public P-256 key (JWE JSON).

    One recipient gives the flattened serialization, more the general one.
    """
    inner = sign_compact(claims, admin.signing, typ=GALLERY_TYP).encode("ascii")
    keys = list(recipients)
    if not keys:
        raise ValueError("an update needs at least one recipient device")
    protected = {"enc": CONTENT_ENC, "cty": "JWT"}
    sealed = (rfc_jwe.FlattenedJSONEncryption(protected, inner) if len(keys) == 1
              else rfc_jwe.GeneralJSONEncryption(protected, inner))
    for key in keys:
        sealed.add_recipient({"alg": KEY_ALG, "kid": key.kid}, key)
    return json.dumps(rfc_jwe.encrypt_json(sealed, None, algorithms=[KEY_ALG, CONTENT_ENC]), separators=(",", ":"))


def update_head(claims: dict[str, Any], sealed: str, chunks: list[str]) -> dict[str, Any]:
    """The head's claims: the update's target, version and times, its size and the SHA-256 of it and of each part."""
    head = {"v": FORMAT_VERSION, **{k: claims[k] for k in ("update_id", "site", "version", "base", "iat", "exp")},
            "size": len(sealed.encode("utf-8")), "sha256": _sha256(sealed), "parts": [_sha256(c) for c in chunks]}
    if claims.get("devices") is not None:
        head["devices"] = claims["devices"]
    return head


def to_frames(sealed: str, claims: dict[str, Any], admin: PartyKeys, max_message_bytes: int) -> list[bytes]:
    """The sealed update as MQTT payloads of at most ``max_message_bytes``: the signed head, then the parts.

    ``claims`` are the update's (the head repeats its target, version and
    times); ``admin`` signs the head.
    """
    room = max_message_bytes - _FRAME_ROOM
    if room < 1024:
        raise ValueError(f"max_message_bytes {max_message_bytes} is too small for an update's frames")
    chunks, pos = [], 0
    while pos < len(sealed) or not chunks:
        end = min(len(sealed), pos + room)
        # JSON escaping may lengthen a chunk (the JWE's quotes; anything else in odd input).
        while end - pos > 1 and len(json.dumps(sealed[pos:end])) > room:
            end = pos + (end - pos) * 3 // 4
        chunks.append(sealed[pos:end])
        pos = end
    head = update_head(claims, sealed, chunks)
    frames = [json.dumps({"v": FRAME_FORMAT, "head": sign_compact(head, admin.signing, typ=HEAD_TYP)},
                         separators=(",", ":")).encode("ascii")]
    if len(frames[0]) > max_message_bytes:
        raise ValueError(f"the head of an update in {len(chunks)} parts is over max_message_bytes "
                         f"{max_message_bytes}: allow larger messages")
    for i, data in enumerate(chunks):
        frames.append(json.dumps({"v": FRAME_FORMAT, "sha256": head["sha256"], "part": i, "data": data},
                                 separators=(",", ":")).encode("utf-8"))
        if len(frames[-1]) > max_message_bytes:
            raise ValueError(f"frame of {len(frames[-1])} bytes over max_message_bytes {max_message_bytes}")
    return frames


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- target, expiry and version ----------------------------------------------------


def check_target(update: GalleryUpdate | UpdateHead, *, site: str, device: str, now: float, skew: float) -> None:
    if update.site != site:
        raise reject("wrong_site", "the update is for another site")
    if update.devices is not None and device not in update.devices:
        raise reject("not_for_this_device", "the update names other devices of this site")
    if now > update.exp + skew:
        raise reject("expired", f"expired {now - update.exp:.0f}s ago")
    if now < update.iat - skew:
        raise reject("not_yet_valid", f"issued {update.iat - now:.0f}s in the future")


def check_fresh(update: GalleryUpdate | UpdateHead, held: int, applied: Callable[[str], bool]) -> None:
    """Versions only go up (checked on the head too, before any part is kept)."""
    if update.version <= held:
        if applied(update.update_id):
            raise reject("replayed", f"update version {update.version} was already applied")
        raise reject("rollback", f"version {update.version} is not above the version held, {held}")


def check_match(update: GalleryUpdate, own_target: float, cap: float | None) -> None:
    """An update's match target is taken only if it is at least as strict as the device's own (its configured
    target and any earlier cap); a device on a fixed threshold (target 0) has no target to tighten."""
    if update.match is None:
        return
    if own_target <= 0:
        raise reject("looser_match", "this device runs a fixed threshold (match.fpir_target = 0)")
    held = min(own_target, cap) if cap is not None else own_target
    if update.match.fpir_target > held * (1 + 1e-9):
        raise reject("looser_match", f"target {update.match.fpir_target:g} is looser than the {held:g} in force")


def check_version(update: GalleryUpdate, held: int, applied: Callable[[str], bool]) -> None:
    """Versions only go up; a delta applies only on the version it names."""
    check_fresh(update, held, applied)
    if update.snapshot:
        return
    if update.base > held:
        raise reject("version_gap", f"applies on version {update.base}; this device holds {held}")
    if update.base < held:
        raise reject("base_mismatch", f"applies on version {update.base}; this device holds {held}")


# -- acknowledgements ------------------------------------------------------------------


def ack_claims(
    *, site: str, device: str, result: str, version: int, digest: str, now: float,
    update: GalleryUpdate | UpdateHead | None = None, reason: str | None = None, detail: str | None = None,
    message_sha256: str | None = None,
) -> dict[str, Any]:
    """What a device answers to an update: the result, the version and gallery hash it now holds.

    ``result`` is ``applied``, ``refused``, or ``holding`` (sent at start:
    what the device holds, no update named).
    """
    return {
        "v": FORMAT_VERSION, "site": site, "device": device, "result": result, "reason": reason,
        "detail": detail, "update_id": update.update_id if update else None,
        "offered_version": update.version if update else None, "kind": update.kind if update else None,
        "version": version, "digest": digest, "message_sha256": message_sha256, "time": round(now, 3),
    }


#: An ack's time, as an event's: from 2000 to 2100.
_ACK_TIME = Annotated[float, Field(strict=True, ge=946_684_800.0, le=4_102_444_800.0, allow_inf_nan=False)]
_VERSION = Annotated[int, Field(strict=True, ge=0, lt=2**63)]


class AckClaims(BaseModel):
    """What an ack must hold to be planned on: a signed ack comes from a door's key, and a stolen key must not
    stop the admin's plan for every door (a time of 10**400 or a version of Infinity, which JSON lets through)."""

    model_config = ConfigDict(extra="allow")

    site: Annotated[str, Field(strict=True, max_length=64)]
    device: Annotated[str, Field(strict=True, max_length=64)]
    result: Literal["applied", "refused", "holding"]
    reason: Annotated[str, Field(strict=True, max_length=40)] | None = None
    update_id: Annotated[str, Field(strict=True, max_length=64)] | None = None
    offered_version: _VERSION | None = None
    version: _VERSION
    digest: Annotated[str, Field(strict=True, max_length=128)] | None = None
    time: _ACK_TIME


def sign_ack(claims: dict[str, Any], device_keys: PartyKeys) -> str:
    return sign_compact(claims, device_keys.signing, typ=ACK_TYP)


def verify_ack(token: bytes | str, devices: KeyRing) -> dict[str, Any]:
    """An ack's claims, checked against the devices' public keys; raises EnvelopeError (or ValueError)."""

    def signer(kid: str):
        hit = devices.signer(kid)
        return hit[1] if hit else None

    claims, kid = verify_compact(token, signer, typ=ACK_TYP, max_bytes=16384)
    owner = devices.signer(kid)[0]
    if owner != f"{claims.get('site')}/{claims.get('device')}":
        raise ValueError(f"ack signed by {owner!r} names another device")
    try:
        AckClaims.model_validate(claims)
    except ValidationError as e:
        err = e.errors(include_input=False, include_url=False)[0]
        raise ValueError(f"ack of {owner!r}: {'.'.join(str(x) for x in err['loc'])}: {err['msg'][:80]}") from None
    return claims
