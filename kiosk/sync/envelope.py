"""Signed-then-encrypted JOSE envelopes (a nested JWT, RFC 7519 §5.2).

The claim set is signed with the sender's Ed25519 key (compact JWS, ``alg``
"Ed25519", ``kid`` naming the sender's key) and the JWS is then encrypted to
the recipient's P-256 key (compact JWE, ECDH-ES+A256KW with A256GCM, ``kid``
naming the recipient's key, ``cty`` "JWT"). Nobody on the way, the broker
included, can read or forge it; any standard JOSE library can open it.

``typ`` tells kinds of message apart (explicit typing, RFC 8725 §3.11), so a
check-in event cannot be replayed as something else.

Everything JOSE in the kiosk goes through joserfc (chosen for speed: the
publisher's drain rate and the back end's rest on it); the tests open what
it makes, and make what it opens, with a second, independent library.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwe as rfc_jwe
from joserfc import jws as rfc_jws
from joserfc.errors import JoseError

from ..errors import EnvelopeError
from .keys import CONTENT_ENC, KEY_ALG, SIG_ALG, Key, KeyRing, PartyKeys

log = logging.getLogger(__name__)

EVENT_TYP = "kiosk-event+jwt"

#: Envelopes larger than this are refused unread (an evidence crop fits).
MAX_ENVELOPE_BYTES = 1_000_000


@dataclass(frozen=True)
class Opened:
    """What an envelope said, and who verifiably said it."""

    claims: dict[str, Any]
    signer: str  # owner of the signing key: "site/device" or "backend"
    signing_kid: str
    typ: str


def seal(claims: dict[str, Any], sender: PartyKeys, recipient_key: Key, *, typ: str = EVENT_TYP) -> str:
    """Sign ``claims`` with the sender's key and encrypt them to ``recipient_key``.

    :param recipient_key: the recipient's public P-256 encryption key (with ``kid``).
    """
    payload = json.dumps(claims, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    inner = rfc_jws.serialize_compact(
        {"alg": SIG_ALG, "kid": sender.signing_kid, "typ": typ}, payload, sender.signing, algorithms=[SIG_ALG]
    )
    header = {"alg": KEY_ALG, "enc": CONTENT_ENC, "kid": recipient_key.kid, "cty": "JWT"}
    return rfc_jwe.encrypt_compact(header, inner, recipient_key, algorithms=[KEY_ALG, CONTENT_ENC])


def open_sealed(token: str | bytes, recipient: PartyKeys, senders: KeyRing, *, typ: str = EVENT_TYP) -> Opened:
    """Decrypt with the recipient's private key and verify against known senders.

    Raises :class:`EnvelopeError` with a ``reason`` attribute: ``malformed``,
    ``wrong_recipient``, ``not_decryptable``, ``unknown_signer``,
    ``bad_signature`` or ``wrong_type``.

    The headers are read and checked here before any key is used.
    """
    if isinstance(token, bytes):
        if len(token) > MAX_ENVELOPE_BYTES:
            raise _fail("malformed", "envelope too large")
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise _fail("malformed", "envelope is not compact JOSE text") from None
    if len(token) > MAX_ENVELOPE_BYTES or token.count(".") != 4:
        raise _fail("malformed", "not a compact JWE")
    header = _protected_header(token, "JWE")
    if header.get("alg") != KEY_ALG or header.get("enc") != CONTENT_ENC:
        raise _fail("malformed", f"unexpected JWE algorithms {header.get('alg')}/{header.get('enc')}")
    if header.get("kid") != recipient.encryption_kid:
        raise _fail("wrong_recipient", f"encrypted to key {header.get('kid')!r}, not ours")
    try:
        outer = rfc_jwe.decrypt_compact(token, recipient.encryption, registry=_JWE_REGISTRY)
        inner_text = outer.plaintext.decode("ascii")
    except (JoseError, ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise _fail("not_decryptable", f"cannot decrypt: {type(e).__name__}: {e}") from None
    if inner_text.count(".") != 2:
        raise _fail("malformed", "encrypted content is not a compact JWS")
    protected = _protected_header(inner_text, "JWS")
    kid = protected.get("kid")
    if protected.get("alg") != SIG_ALG:
        raise _fail("bad_signature", f"signature algorithm {protected.get('alg')!r} is not {SIG_ALG}")
    found = senders.signer(kid) if isinstance(kid, str) else None
    if found is None:
        raise _fail("unknown_signer", f"signed by unknown key {kid!r}")
    owner, key = found
    try:
        inner = rfc_jws.deserialize_compact(inner_text, key, registry=_JWS_REGISTRY)
    except (JoseError, ValueError, TypeError, KeyError) as e:
        raise _fail("bad_signature", f"signature does not verify: {type(e).__name__}: {e}") from None
    if protected.get("typ") != typ:
        raise _fail("wrong_type", f"message type {protected.get('typ')!r}, expected {typ!r}")
    return Opened(claims=_claims_from(inner.payload), signer=owner, signing_kid=kid, typ=typ)


#: What :func:`open_sealed` lets joserfc do: these algorithms and nothing else.
_JWE_REGISTRY = rfc_jwe.JWERegistry(algorithms=[KEY_ALG, CONTENT_ENC])
_JWS_REGISTRY = rfc_jws.JWSRegistry(algorithms=[SIG_ALG])


def _protected_header(text: str, kind: str) -> dict[str, Any]:
    """The protected header of a compact JWS or JWE (its first part), read and not yet trusted."""
    first = text.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    except (ValueError, TypeError) as e:  # binascii.Error and JSONDecodeError are ValueErrors
        raise _fail("malformed", f"unreadable {kind} header: {e}") from None
    except RecursionError:  # JSON nested deeper than the interpreter's stack
        raise _fail("malformed", f"{kind} header nested too deep") from None
    if not isinstance(header, dict):
        raise _fail("malformed", f"{kind} header is not a JSON object")
    return header


def sign_compact(claims: dict[str, Any], key: Key, *, typ: str) -> str:
    """``claims`` as a compact JWS signed with an Ed25519 key (``kid`` taken from the key).

    Signed, not encrypted: for what is shown as a QR code (provisioning
    codes, residents' credentials), where the camera must read it offline.
    """
    payload = json.dumps(claims, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    header = {"alg": SIG_ALG, "kid": key.kid, "typ": typ}
    return rfc_jws.serialize_compact(header, payload, key, algorithms=[SIG_ALG])


def verify_compact(
    token: str | bytes, signer: Callable[[str], Key | None], *, typ: str, max_bytes: int = 8192
) -> tuple[dict[str, Any], str]:
    """Verify a compact JWS made by :func:`sign_compact`; return its claims and the signing key id.

    ``signer(kid)`` returns the public key trusted for that key id, or None.
    Raises :class:`EnvelopeError` with a ``reason``: ``malformed``,
    ``wrong_type`` (not a ``typ`` message: someone else's code),
    ``unknown_signer`` or ``bad_signature``.
    """
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise _fail("malformed", "not compact JOSE text") from None
    token = token.strip()
    if len(token) > max_bytes or token.count(".") != 2:
        raise _fail("malformed", "not a compact JWS")
    protected, _ = parse_jws(token)
    # The type is read before the signature is checked only to tell someone
    # else's code from a forged one of ours; nothing is accepted on it.
    if protected.get("typ") != typ:
        raise _fail("wrong_type", f"message type {protected.get('typ')!r}, expected {typ!r}")
    if protected.get("alg") != SIG_ALG:
        raise _fail("bad_signature", f"signature algorithm {protected.get('alg')!r} is not {SIG_ALG}")
    kid = protected.get("kid")
    key = signer(kid) if isinstance(kid, str) else None
    if key is None:
        raise _fail("unknown_signer", f"signed by unknown key {kid!r}")
    verified = verified_payload(token, key, max_bytes=max_bytes)
    if verified is None:
        raise _fail("bad_signature", "signature does not verify")
    return _claims_from(verified), kid


def parse_jws(text: str, *, loads: Callable[[bytes], Any] = json.loads) -> tuple[dict[str, Any], bytes]:
    """The protected header and the payload of a compact JWS, read and not yet verified.

    Raises :class:`EnvelopeError` (``malformed``) when a part is not
    base64url, or the header not a JSON object (read with ``loads``).
    """
    try:
        header_b64, payload_b64, signature_b64 = text.split(".")
        raw_header, payload = _unb64(header_b64), _unb64(payload_b64)
        _unb64(signature_b64)
        protected = loads(raw_header)
    except (ValueError, TypeError, UnicodeDecodeError) as e:  # binascii.Error and JSONDecodeError are ValueErrors
        raise _fail("malformed", f"unreadable JWS: {type(e).__name__}: {e}") from None
    except RecursionError:
        raise _fail("malformed", "JWS header nested too deep") from None
    if not isinstance(protected, dict):
        raise _fail("malformed", "JWS header is not a JSON object")
    return protected, payload


def verified_payload(text: str, key: Key, *, max_bytes: int) -> bytes | None:
    """The payload of the compact JWS ``text`` if it carries a good Ed25519 signature by ``key``, else None.

    Its header has been checked by the caller; joserfc checks the signature,
    allowing Ed25519 alone, for a JWS of up to ``max_bytes``.
    """
    registry = rfc_jws.JWSRegistry(algorithms=[SIG_ALG])
    # Sizes are the caller's to bound (max_bytes): joserfc's own defaults are for web tokens.
    registry.max_header_length = registry.max_payload_length = registry.max_signature_length = max_bytes
    try:
        signed = rfc_jws.extract_compact(text.encode("ascii"), registry=registry)
        if rfc_jws.validate_compact(signed, key, registry=registry):
            return signed.payload
    except (JoseError, ValueError, TypeError, KeyError):
        pass
    return None


def _unb64(part: str) -> bytes:
    """base64url, padding optional (as the kiosk has always read it)."""
    if len(part) % 4 == 1:
        raise binascii.Error("not base64url: a length of 4n+1")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _claims_from(payload: bytes) -> dict[str, Any]:
    """Claims (verified JWS content), which must be a JSON object."""
    try:
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail("malformed", f"claims are not JSON: {e}") from None
    except RecursionError:
        raise _fail("malformed", "claims nested too deep") from None
    if not isinstance(claims, dict):
        raise _fail("malformed", "claims are not a JSON object")
    return claims


def _fail(reason: str, message: str) -> EnvelopeError:
    err = EnvelopeError(f"{reason}: {message}")
    err.reason = reason
    return err
