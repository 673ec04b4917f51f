"""Residents' QR credential: a short-lived code from the back end, checked offline.

For residents who cannot or will not use their face. The back end issues a
compact JWS (``typ`` "kiosk-qr+jwt", Ed25519, signed by its key) to the
resident's phone, for one door::

    {"sub": RESIDENT_ID, "site": SITE, "aud": "SITE/DEVICE", "iat": ISSUED, "exp": EXPIRES, "nonce": RANDOM}

The phone shows it as a QR code. The kiosk checks signature, site, door
(``aud``: its own site and device id) and expiry without the network, and
refuses a nonce it has seen before: used nonces are kept in SQLite until
the code expires, so a replay is refused after a restart too. The audience
is what makes "once" hold across the site: the kiosks share no state, so a
code good at every door would open each of them once; bound to its door, it
opens that one door, once. An accepted code is a check-in of type ``qr``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlite_utils

from .capture.base import Frame
from .capture.qr import decode_qr
from .config import QrCredentialSettings
from .errors import EnvelopeError, TokenRefused
from .match.decide import Decision, Outcome
from .ratelimit import EventRateLimit
from .sync.envelope import sign_compact, verify_compact
from .sync.keys import BACKEND, KeyRing, PartyKeys

log = logging.getLogger(__name__)

QR_TYP = "kiosk-qr+jwt"
#: A credential is at most this long (it must fit a QR code a phone shows).
MAX_TOKEN_BYTES = 1500

_RESIDENT = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_DOOR = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

#: Refusals an event is recorded for (a code of ours that is not good); other
#: codes (someone else's QR code, an unreadable one) are ignored.
RECORDED = frozenset({"forged", "expired", "not_yet_valid", "too_long", "wrong_site", "wrong_door", "replayed",
                      "bad_claims"})
#: Refusals anyone can make up at no cost (no back-end signature): recorded at most
#: ``forged_per_minute`` a minute, the rest summed up (:class:`~kiosk.ratelimit.EventRateLimit`).
#: The others carry the back end's signature, so a flood of them cannot be made up, and
#: a flood of forgeries never hides them.
RATE_LIMITED = frozenset({"forged"})


def audience(site: str, device: str) -> str:
    """The ``aud`` of a credential for one door: ``SITE/DEVICE``."""
    return f"{site}/{device}"


def issue_token(backend: PartyKeys, resident_id: str, site: str, device: str, *, lifetime_s: float = 120,
                now: float | None = None) -> str:
    """A resident's credential for one door, signed with the back end's private key (what the back end does)."""
    if not _RESIDENT.match(resident_id):
        raise ValueError(f"bad resident id {resident_id!r}")
    if not _DOOR.match(site) or not _DOOR.match(device):
        raise ValueError(f"bad site or device id {site!r}/{device!r}")
    now = int(time.time() if now is None else now)
    claims = {"sub": resident_id, "site": site, "aud": audience(site, device), "iat": now,
              "exp": int(now + lifetime_s), "nonce": secrets.token_urlsafe(16)}
    return sign_compact(claims, backend.signing, typ=QR_TYP)


@dataclass(frozen=True)
class QrCredential:
    resident_id: str
    site: str
    audience: str
    issued_at: int
    expires_at: int
    nonce: str
    signed_by: str


class NonceCache:
    """Nonces already used, in the kiosk database, until their code expires."""

    def __init__(self, db: sqlite_utils.Database, *, wall_clock: Callable[[], float] = time.time, keep_s: float = 60.0):
        self.db = db
        self._wall = wall_clock
        self.keep_s = keep_s  # kept this long past expiry (clock skew)

    def use(self, nonce: str, expires_at: float) -> bool:
        """Record ``nonce`` as used; False if it was used before."""
        now = self._wall()
        with self.db.atomic():
            self.db.execute("DELETE FROM qr_nonces WHERE expires_at < ?", [now - self.keep_s])
            try:
                self.db.execute("INSERT INTO qr_nonces(nonce, expires_at, used_at) VALUES (?,?,?)",
                                [nonce, float(expires_at), now])
            except sqlite3.IntegrityError:
                return False
        return True

    def used(self, nonce: str) -> bool:
        """Whether ``nonce`` was used (and is still remembered), without using it."""
        return self.db.execute("SELECT 1 FROM qr_nonces WHERE nonce = ?", [nonce]).fetchone() is not None

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM qr_nonces").fetchone()[0]


class QrVerifier:
    """Checks residents' credentials for one site, offline."""

    def __init__(self, backend_keys: KeyRing | PartyKeys, site: str, settings: QrCredentialSettings,
                 nonces: NonceCache, *, device: str, wall_clock: Callable[[], float] = time.time):
        self.ring = backend_keys if isinstance(backend_keys, KeyRing) else KeyRing([backend_keys])
        self.site = site
        self.audience = audience(site, device)
        self.settings = settings
        self.nonces = nonces
        self._wall = wall_clock

    def _signer(self, kid: str):
        found = self.ring.signer(kid)
        return found[1] if found and found[0] == BACKEND else None

    def verify(self, token: str | bytes) -> QrCredential:
        """The credential, used up; :class:`TokenRefused` with a ``reason`` otherwise.

        Reasons: ``not_ours`` (not a kiosk credential), ``forged``,
        ``bad_claims`` (no door named, among others), ``too_long``,
        ``not_yet_valid``, ``expired``, ``wrong_site``, ``wrong_door``,
        ``replayed``. A refused credential's nonce is not used up.
        """
        try:
            claims, kid = verify_compact(token, self._signer, typ=QR_TYP, max_bytes=MAX_TOKEN_BYTES)
        except EnvelopeError as e:
            reason = getattr(e, "reason", "malformed")
            raise TokenRefused("not_ours" if reason in ("malformed", "wrong_type") else "forged", str(e)) from None
        try:
            cred = QrCredential(claims["sub"], claims["site"], claims["aud"], claims["iat"], claims["exp"],
                                claims["nonce"], kid)
            ok = (isinstance(cred.resident_id, str) and _RESIDENT.match(cred.resident_id)
                  and isinstance(cred.site, str) and isinstance(cred.audience, str)
                  and isinstance(cred.nonce, str) and _NONCE.match(cred.nonce)
                  and all(type(t) is int for t in (cred.issued_at, cred.expires_at)))
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise TokenRefused("bad_claims", "credential claims are incomplete or malformed")
        s, now = self.settings, self._wall()
        problem = None
        if cred.expires_at - cred.issued_at > s.max_lifetime_s:
            problem = "too_long", f"valid for {cred.expires_at - cred.issued_at} s, at most {s.max_lifetime_s:g}"
        elif cred.issued_at > now + s.clock_skew_s:
            problem = "not_yet_valid", "issued in the future (is the clock right?)"
        elif now > cred.expires_at + s.clock_skew_s:
            problem = "expired", f"expired {now - cred.expires_at:.0f} s ago"
        elif cred.site != self.site or not cred.audience.startswith(f"{self.site}/"):
            problem = "wrong_site", "for another site"
        elif cred.audience != self.audience:
            problem = "wrong_door", "for another door of this site"
        elif not self.nonces.use(cred.nonce, cred.expires_at + s.clock_skew_s):
            problem = "replayed", "this code was used before"
        if problem:
            err = TokenRefused(*problem)
            err.resident_id = cred.resident_id  # signed by the back end: the id is genuine
            raise err
        return cred


class QrCheckIn:
    """Reads residents' codes from frames: every Nth frame, each showing once.

    The same code seen again within ``repeat_window_s`` (of frame time) is
    the same showing (a phone held up for a few seconds), not a replay.
    Forged codes become decisions at most ``forged_per_minute`` a minute (on
    ``clock``, monotonic seconds); :meth:`suppressed` says how many more
    there were, once a minute.
    """

    def __init__(self, verifier: QrVerifier, settings: QrCredentialSettings, *,
                 clock: Callable[[], float] = time.monotonic):
        self.verifier = verifier
        self.settings = settings
        self.forged = EventRateLimit(settings.forged_per_minute, clock=clock)
        self._seen: dict[bytes, float] = {}
        self.frames = 0
        self.looks = 0
        self.refused: dict[str, int] = {}

    def offer(self, frame: Frame) -> list[Decision]:
        """Decisions for the codes newly shown in this frame (usually none)."""
        self.frames += 1
        if (self.frames - 1) % self.settings.every_n_frames:
            return []
        self.looks += 1
        payloads = decode_qr(frame.image, thorough=False)
        if not payloads:
            return []
        now = frame.timestamp
        window = self.settings.repeat_window_s
        self._seen = {k: t for k, t in self._seen.items() if now - t <= window}
        out = []
        for payload in payloads:
            key = hashlib.sha256(payload).digest()
            showing = key in self._seen
            self._seen[key] = now
            if showing:
                continue
            d = self._decide(payload, frame.timestamp)
            if d is not None:
                out.append(d)
        return out

    def _decide(self, payload: bytes, t: float) -> Decision | None:
        try:
            cred = self.verifier.verify(payload)
        except TokenRefused as e:
            self.refused[e.reason] = self.refused.get(e.reason, 0) + 1
            if e.reason not in RECORDED:
                log.debug("ignored a QR code that is not a resident credential: %s", e)
                return None
            if e.reason in RATE_LIMITED and not self.forged.take():
                log.debug("QR code refused (%s), not recorded: more than %d a minute", e.reason,
                          self.forged.per_minute)
                return None
            rid = getattr(e, "resident_id", None)
            log.info("resident QR code refused: %s", e.reason)  # who: in the qr_refused event, not the journal
            return Decision(Outcome.QR_REFUSED, 0, resident_id=rid, reason=e.reason, timestamp=t, method="qr")
        return Decision(Outcome.ACCEPTED, 0, resident_id=cred.resident_id, frames=1, timestamp=t, method="qr")

    def suppressed(self, *, final: bool = False) -> int:
        """Forged codes not recorded one by one since the last call, once a summary of them is due (else 0)."""
        return self.forged.summary(final=final)


def open_qr_checkin(config, db: sqlite_utils.Database, *, wall_clock: Callable[[], float] = time.time,
                    clock: Callable[[], float] = time.monotonic) -> QrCheckIn | None:
    """The QR check-in stage the config asks for, or None (off, or no back-end key to verify with).

    A back-end key file that is there but unusable is a :class:`~kiosk.errors.KeyFileError`.
    """
    from .errors import KeyFileError
    from .sync.keys import load_public, resolve

    s = config.qr_credential
    if not s.enabled:
        return None
    path = resolve(config.keys.backend_public_key, config.device.state_dir)
    if not path.is_file():
        log.warning("residents' QR codes are off: no back-end public key at %s", path)
        return None
    ring = KeyRing(p for p in load_public(path) if p.owner == BACKEND)
    if not len(ring):
        raise KeyFileError(f"{path}: holds no back-end keys (qr_credential needs them)")
    verifier = QrVerifier(ring, config.device.site, s, NonceCache(db, wall_clock=wall_clock),
                          device=config.device.device_id, wall_clock=wall_clock)
    return QrCheckIn(verifier, s, clock=clock)
