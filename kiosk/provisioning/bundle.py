"""The provisioning bundle: what a provisioning QR code tells a kiosk, signed by the fleet root key.

A bundle is a compact JWS (``typ`` "kiosk-provision+jwt", Ed25519) whose
claims are short, because they must fit a QR code a camera can read:

=========  ==========================================================
``v``      format version (1)
``site``   site id; ``dev``: device id (optional: else the configured one)
``hw``     the one kiosk it is for: its hardware id (optional; see :mod:`.binding`)
``name``   the site's name; ``addr``: its service address
``lat``    latitude, ``lon`` longitude (degrees, WGS 84), ``r`` clock-in radius (m)
``mqtt``   broker URL; ``ca``: SHA-256 of its CA certificate (DER, base64url)
``be``     the back end's public keys, ``adm`` the admins' (``SIG.ENC``,
           see :func:`kiosk.sync.keys.compact_public`)
``iat``    issue time, ``exp`` expiry (unix seconds)
=========  ==========================================================

A reset (``typ`` "kiosk-reset+jwt") names the site and device it resets and
is only good for a provisioning issued before it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import OKPKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import MqttSettings
from ..errors import EnvelopeError, ProvisioningRefused
from ..sync.envelope import sign_compact, verify_compact
from ..sync.keys import BACKEND, PartyKeys, compact_public, party_from_compact
from .trust import RootKeys

PROVISION_TYP = "kiosk-provision+jwt"
RESET_TYP = "kiosk-reset+jwt"
BUNDLE_VERSION = 1
ADMIN = "admin"

#: A provisioning code is at most this long (a version-40 QR code holds 2,953 bytes).
MAX_CODE_BYTES = 2900

_ID = r"^[A-Za-z0-9_.-]+$"
_HW = r"^[A-Za-z0-9_.:-]+$"
_NONCE = r"^[A-Za-z0-9_-]{16,64}$"
_B64_SHA256 = r"^[A-Za-z0-9_-]{43}$"
_COMPACT_KEYS = r"^[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{44}$"

#: What the installer reads for each refusal reason.
MESSAGES = {
    "malformed": "this is not a readable provisioning code (damaged, cut off or badly printed?)",
    "wrong_type": "this is not a provisioning code",
    "unknown_signer": "this code was not signed by this fleet's root key (a code for another fleet?)",
    "bad_signature": "this code's signature is wrong: it was altered or forged",
    "expired": "this code has expired: ask for a new one",
    "bad_content": "this code is signed but its content is not usable",
    "wrong_device": "this reset code is for another site or device",
    "stale_reset": "this reset code was issued before the current provisioning",
    "not_provisioned": "the device is not provisioned: there is nothing to reset",
    "reset_used": "this reset code was used already: ask for a new one",
    "wrong_identity": "this code is for another site or device than this kiosk's config names",
    "no_device": "this code names no device, and this kiosk's config names none (device.device_id)",
    "other_kiosk": "this code is for another kiosk (it names another hardware id)",
    "not_bound": "this code is not bound to this kiosk: it names neither its hardware id nor the site and device "
                 "its config names (an installer at a shell may take it with `kiosk provision`)",
    "already_provisioned": "the device is already provisioned: re-provisioning needs a signed reset first",
    "undelivered_events": "check-in events have not reached the back end yet",
}


class _BundleClaims(BaseModel):
    """The wire format, checked as strictly as the config it becomes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = Field(ge=1, le=BUNDLE_VERSION)
    site: str = Field(min_length=1, max_length=64, pattern=_ID)
    dev: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    hw: str | None = Field(None, min_length=1, max_length=64, pattern=_HW)
    name: str = Field(min_length=1, max_length=120)
    addr: str = Field(min_length=1, max_length=200)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    r: float = Field(gt=0, le=100_000)
    mqtt: str
    ca: str = Field(pattern=_B64_SHA256)
    be: str = Field(pattern=_COMPACT_KEYS)
    adm: str = Field(pattern=_COMPACT_KEYS)
    iat: int = Field(ge=0)
    exp: int = Field(ge=0)

    @field_validator("mqtt")
    @classmethod
    def _broker(cls, url: str) -> str:
        MqttSettings(url=url)  # the same rules as mqtt.url in the config
        return url


@dataclass(frozen=True)
class Bundle:
    """A verified provisioning bundle."""

    site: str
    name: str
    address: str
    latitude: float
    longitude: float
    radius_m: float
    broker_url: str
    ca_sha256: str  # base64url SHA-256 of the broker's CA certificate (DER)
    backend: PartyKeys
    admin: PartyKeys
    issued_at: int
    expires_at: int
    device_id: str | None = None
    hardware_id: str | None = None  # the one kiosk it is for
    signed_by: str = ""  # key id of the fleet root key

    def claims(self) -> dict[str, Any]:
        c = {
            "v": BUNDLE_VERSION,
            "site": self.site,
            "name": self.name,
            "addr": self.address,
            "lat": self.latitude,
            "lon": self.longitude,
            "r": self.radius_m,
            "mqtt": self.broker_url,
            "ca": self.ca_sha256,
            "be": compact_public(self.backend),
            "adm": compact_public(self.admin),
            "iat": self.issued_at,
            "exp": self.expires_at,
        }
        if self.device_id:
            c["dev"] = self.device_id
        if self.hardware_id:
            c["hw"] = self.hardware_id
        return c

    def summary(self) -> dict[str, Any]:
        """What an installer checks (no keys, only their ids)."""
        return {
            "site": self.site,
            "device": self.device_id,
            "hardware_id": self.hardware_id,
            "name": self.name,
            "address": self.address,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "radius_m": self.radius_m,
            "broker": self.broker_url,
            "ca_sha256": self.ca_sha256,
            "backend_signing_key": self.backend.signing_kid,
            "admin_signing_key": self.admin.signing_kid,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "signed_by": self.signed_by,
        }


def make_bundle(
    *,
    site: str,
    name: str,
    address: str,
    latitude: float,
    longitude: float,
    radius_m: float,
    broker_url: str,
    ca_sha256: str,
    backend: PartyKeys,
    admin: PartyKeys,
    valid_s: float,
    device_id: str | None = None,
    hardware_id: str | None = None,
    now: float | None = None,
) -> Bundle:
    """A bundle checked against the wire format (ValueError naming what is wrong)."""
    now = int(time.time() if now is None else now)
    bundle = Bundle(
        site=site, name=name, address=address, latitude=latitude, longitude=longitude, radius_m=radius_m,
        broker_url=broker_url, ca_sha256=ca_sha256, backend=backend.public(), admin=admin.public(),
        issued_at=now, expires_at=int(now + valid_s), device_id=device_id, hardware_id=hardware_id,
    )
    try:
        _BundleClaims.model_validate(bundle.claims())
    except ValidationError as e:
        raise ValueError(_problems(e)) from None
    return bundle


def sign_bundle(bundle: Bundle, root_key: OKPKey) -> str:
    """The provisioning code: the bundle signed with the fleet's private root key."""
    return sign_compact(bundle.claims(), root_key, typ=PROVISION_TYP)


def read_bundle(
    code: str | bytes, roots: RootKeys, *, now: float | None = None, skew_s: float = 0.0, check_expiry: bool = True
) -> Bundle:
    """Verify a provisioning code against the fleet root keys and return its bundle.

    Raises :class:`ProvisioningRefused` whose ``reason`` is a key of
    :data:`MESSAGES`. ``check_expiry=False`` re-reads a stored bundle (it
    was in date when it was taken).
    """
    claims, kid = _verify(code, roots, PROVISION_TYP)
    try:
        c = _BundleClaims.model_validate(claims)
        backend = party_from_compact(BACKEND, c.be)
        admin = party_from_compact(ADMIN, c.adm)
    except (ValidationError, ValueError) as e:
        detail = _problems(e) if isinstance(e, ValidationError) else str(e)
        raise refused("bad_content", detail) from None
    if check_expiry:
        _check_expiry(c.exp, now, skew_s)
    return Bundle(
        site=c.site, name=c.name, address=c.addr, latitude=c.lat, longitude=c.lon, radius_m=c.r,
        broker_url=c.mqtt, ca_sha256=c.ca, backend=backend, admin=admin, issued_at=c.iat, expires_at=c.exp,
        device_id=c.dev, hardware_id=c.hw, signed_by=kid,
    )


# -- resets --------------------------------------------------------------------


class _ResetClaims(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: int = Field(ge=1, le=1)
    site: str = Field(min_length=1, max_length=64, pattern=_ID)
    dev: str = Field(min_length=1, max_length=64, pattern=_ID)
    iat: int = Field(ge=0)
    exp: int = Field(ge=0)
    nonce: str = Field(pattern=_NONCE)


@dataclass(frozen=True)
class Reset:
    site: str
    device_id: str
    issued_at: int
    expires_at: int
    nonce: str


def sign_reset(site: str, device_id: str, root_key: OKPKey, *, valid_s: float = 3600, now: float | None = None) -> str:
    """A signed reset for one provisioned device."""
    now = int(time.time() if now is None else now)
    claims = {"v": 1, "site": site, "dev": device_id, "iat": now, "exp": int(now + valid_s),
              "nonce": secrets.token_urlsafe(12)}
    return sign_compact(claims, root_key, typ=RESET_TYP)


def read_reset(code: str | bytes, roots: RootKeys, *, now: float | None = None, skew_s: float = 0.0) -> Reset:
    claims, _ = _verify(code, roots, RESET_TYP)
    try:
        c = _ResetClaims.model_validate(claims)
    except ValidationError as e:
        raise refused("bad_content", f"reset claims: {_problems(e)}") from None
    r = Reset(c.site, c.dev, c.iat, c.exp, c.nonce)
    _check_expiry(r.expires_at, now, skew_s)
    return r


# -- shared --------------------------------------------------------------------


def refused(reason: str, detail: str = "") -> ProvisioningRefused:
    message = MESSAGES.get(reason, reason)
    return ProvisioningRefused(reason, f"{message} ({detail})" if detail else message)


def _verify(code: str | bytes, roots: RootKeys, typ: str) -> tuple[dict, str]:
    try:
        return verify_compact(code, roots.get, typ=typ, max_bytes=MAX_CODE_BYTES)
    except EnvelopeError as e:
        raise refused(getattr(e, "reason", "malformed"), str(e).split(": ", 1)[-1]) from None


def _check_expiry(exp: int, now: float | None, skew_s: float) -> None:
    now = time.time() if now is None else now
    if now > exp + skew_s:
        raise refused("expired", f"expired {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(exp))}")


def _problems(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'claims'}: {err['msg']}" for err in e.errors())


def ca_fingerprint(der: bytes) -> str:
    """The pin of a CA certificate as a bundle carries it: base64url SHA-256 of its DER bytes."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def fingerprint_from_text(text: str) -> str:
    """A SHA-256 fingerprint given as hex (``openssl x509 -fingerprint -sha256``, colons allowed) or base64url."""
    t = text.strip()
    hexdigits = t.replace(":", "").lower()
    if len(hexdigits) == 64 and all(c in "0123456789abcdef" for c in hexdigits):
        return base64.urlsafe_b64encode(bytes.fromhex(hexdigits)).rstrip(b"=").decode("ascii")
    if len(t) == 43 and all(c.isalnum() or c in "-_" for c in t):
        return t
    raise ValueError(f"not a SHA-256 fingerprint: {text!r}")
