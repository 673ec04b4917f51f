"""The enrollment invitation: a short-lived QR code, signed by the admin's key, for one resident at one site.

A compact JWS (``typ`` "kiosk-invite+jwt", Ed25519, the admin's key)::

    {"sub": RESIDENT_ID, "name": DISPLAY_NAME (optional), "site": SITE, "purpose": "enroll",
     "iat": ISSUED, "exp": EXPIRES, "nonce": RANDOM}

Its ``typ`` and signer are not a resident's credential's (``kiosk-qr+jwt``,
the back end's key), so neither is ever taken for the other. Any door of the
site takes it, once: the door remembers a nonce it proposed for (in the
table of used QR nonces), and the back end stores one proposal per nonce, so
a second door's proposal for the same invitation is refused there.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import EnrollmentSettings
from ..errors import EnvelopeError, TokenRefused
from ..qrtoken import MAX_TOKEN_BYTES, NonceCache
from ..sync.envelope import sign_compact, verify_compact
from ..sync.keys import KeyRing, PartyKeys

INVITE_TYP = "kiosk-invite+jwt"
PURPOSE = "enroll"
ADMIN = "admin"
#: The default lifetime of an invitation: long enough to walk to a door.
DEFAULT_LIFETIME_S = 900.0

RESIDENT = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")
NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SITE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: Refusals a door records (an invitation signed for us that is not good, or a forgery in our format).
RECORDED = frozenset({"forged", "expired", "not_yet_valid", "too_long", "wrong_site", "replayed", "bad_claims"})


@dataclass(frozen=True)
class Invitation:
    resident_id: str
    name: str | None
    site: str
    issued_at: int
    expires_at: int
    nonce: str
    token: str


def issue_invitation(admin: PartyKeys, resident_id: str, site: str, *, name: str | None = None,
                     lifetime_s: float = DEFAULT_LIFETIME_S, now: float | None = None) -> str:
    """An invitation for ``resident_id`` at any door of ``site``, signed with the admin's private key."""
    if admin.owner != ADMIN or not admin.has_private:
        raise ValueError("an invitation is signed with the admin's private key")
    if not RESIDENT.match(resident_id):
        raise ValueError(f"bad resident id {resident_id!r}")
    if not _SITE.match(site):
        raise ValueError(f"bad site id {site!r}")
    if name is not None and not (0 < len(name) <= 64 and name.isprintable()):
        raise ValueError("a display name is 1 to 64 printable characters")
    now = int(time.time() if now is None else now)
    claims = {"sub": resident_id, "site": site, "purpose": PURPOSE, "iat": now, "exp": int(now + lifetime_s),
              "nonce": secrets.token_hex(16)}  # hex: never begins with "-", so `--approve ID` always parses
    if name is not None:
        claims["name"] = name
    return sign_compact(claims, admin.signing, typ=INVITE_TYP)


def read_invitation(token: str | bytes, admin: KeyRing | PartyKeys) -> Invitation:
    """The invitation if the admin signed it and its claims are well formed (no time or site check).

    :class:`TokenRefused` with reason ``not_ours``, ``forged`` or ``bad_claims``.
    """
    ring = admin if isinstance(admin, KeyRing) else KeyRing([admin])

    def signer(kid: str):
        found = ring.signer(kid)
        return found[1] if found and found[0] == ADMIN else None

    try:
        claims, _ = verify_compact(token, signer, typ=INVITE_TYP, max_bytes=MAX_TOKEN_BYTES)
    except EnvelopeError as e:
        reason = getattr(e, "reason", "malformed")
        raise TokenRefused("not_ours" if reason in ("malformed", "wrong_type") else "forged", str(e)) from None
    text = token.decode("ascii") if isinstance(token, bytes) else token
    try:
        inv = Invitation(claims["sub"], claims.get("name"), claims["site"], claims["iat"], claims["exp"],
                         claims["nonce"], text.strip())
        ok = (claims.get("purpose") == PURPOSE and isinstance(inv.resident_id, str) and RESIDENT.match(inv.resident_id)
              and isinstance(inv.site, str) and isinstance(inv.nonce, str) and NONCE.match(inv.nonce)
              and (inv.name is None or (isinstance(inv.name, str) and 0 < len(inv.name) <= 64
                                        and inv.name.isprintable()))
              and all(type(t) is int for t in (inv.issued_at, inv.expires_at)))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise TokenRefused("bad_claims", "invitation claims are incomplete or malformed")
    return inv


class InvitationVerifier:
    """Checks invitations for one site, offline, against the pinned admin key."""

    def __init__(self, admin: KeyRing | PartyKeys, site: str, settings: EnrollmentSettings, nonces: NonceCache, *,
                 wall_clock: Callable[[], float] = time.time):
        self.admin = admin
        self.site = site
        self.settings = settings
        self.nonces = nonces
        self._wall = wall_clock

    def verify(self, token: str | bytes) -> Invitation:
        """The invitation, not yet used up (:meth:`use` does that); :class:`TokenRefused` otherwise.

        Reasons: ``not_ours``, ``forged``, ``bad_claims``, ``too_long``,
        ``not_yet_valid``, ``expired``, ``wrong_site``, ``replayed``.
        """
        inv = read_invitation(token, self.admin)
        s, now = self.settings, self._wall()
        problem = None
        if inv.expires_at - inv.issued_at > s.max_lifetime_s:
            problem = "too_long", f"valid for {inv.expires_at - inv.issued_at} s, at most {s.max_lifetime_s:g}"
        elif inv.issued_at > now + s.clock_skew_s:
            problem = "not_yet_valid", "issued in the future (is the clock right?)"
        elif now > inv.expires_at + s.clock_skew_s:
            problem = "expired", f"expired {now - inv.expires_at:.0f} s ago"
        elif inv.site != self.site:
            problem = "wrong_site", "for another site"
        elif self.nonces.used(inv.nonce):
            problem = "replayed", "this invitation was used before"
        if problem:
            err = TokenRefused(*problem)
            err.resident_id = inv.resident_id  # signed by the admin: the id is genuine
            raise err
        return inv

    def use(self, inv: Invitation) -> bool:
        """Use the invitation up (its proposal is committed); False if it was used meanwhile."""
        return self.nonces.use(inv.nonce, inv.expires_at + self.settings.clock_skew_s)
