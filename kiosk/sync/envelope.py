"""Signed-then-encrypted JOSE envelopes (a nested JWT, RFC 7519 §5.2).

The claim set is signed with the sender's Ed25519 key (compact JWS, ``alg``
"Ed25519", ``kid`` naming the sender's key) and the JWS is then encrypted to
the recipient's P-256 key (compact JWE, ECDH-ES+A256KW with A256GCM, ``kid``
naming the recipient's key, ``cty`` "JWT"). Nobody on the way, the broker
included, can read or forge it; any standard JOSE library can open it.

``typ`` tells kinds of message apart (explicit typing, RFC 8725 §3.11), so a
check-in event cannot be replayed as something else.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwe as rfc_jwe
from joserfc import jws as rfc_jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from ..errors import EnvelopeError
from .keys import CONTENT_ENC, KEY_ALG, SIG_ALG, KeyRing, PartyKeys

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


def seal(claims: dict[str, Any], sender: PartyKeys, recipient_key: jwk.JWK, *, typ: str = EVENT_TYP) -> str:
    """Sign ``claims`` with the sender's key and encrypt them to ``recipient_key``.

    :param recipient_key: the recipient's public P-256 encryption key (with ``kid``).

    Sealed with joserfc, which does it in about a third of jwcrypto's time
    (jwcrypto deep-copies its header registries for every object): the
    publisher's drain rate rests on it. The tests open envelopes with
    jwcrypto too, an independent implementation.
    """
    payload = json.dumps(claims, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    signing = _rfc_key(sender.signing, private=True)
    inner = rfc_jws.serialize_compact(
        {"alg": SIG_ALG, "kid": sender.signing_kid, "typ": typ}, payload, signing, algorithms=[SIG_ALG]
    )
    header = {"alg": KEY_ALG, "enc": CONTENT_ENC, "kid": recipient_key.get("kid"), "cty": "JWT"}
    return rfc_jwe.encrypt_compact(header, inner, _rfc_key(recipient_key, private=False),
                                   algorithms=[KEY_ALG, CONTENT_ENC])


#: joserfc copies of jwcrypto key objects, by the object (held, so that its id stays its own);
#: the least recently used go first once a back end knows more doors than this.
_RFC_KEYS: OrderedDict[tuple[int, bool], tuple[jwk.JWK, Any]] = OrderedDict()
_RFC_KEYS_MAX = 20_000


def _rfc_key(key: jwk.JWK, *, private: bool):
    """The joserfc form of a jwcrypto key (OKP Ed25519 or EC P-256), made once per key object.

    Cached by the object, never by its ``kid``: a key id says nothing until
    the key behind it is checked.
    """
    hit = _RFC_KEYS.get((id(key), private))
    if hit is not None and hit[0] is key:
        _RFC_KEYS.move_to_end((id(key), private))
        return hit[1]
    data = json.loads(key.export(private_key=private))
    made = (OKPKey if data["kty"] == "OKP" else ECKey).import_key(data)
    while len(_RFC_KEYS) >= _RFC_KEYS_MAX:
        _RFC_KEYS.popitem(last=False)
    _RFC_KEYS[(id(key), private)] = (key, made)
    return made


def open_sealed(token: str | bytes, recipient: PartyKeys, senders: KeyRing, *, typ: str = EVENT_TYP) -> Opened:
    """Decrypt with the recipient's private key and verify against known senders.

    Raises :class:`EnvelopeError` with a ``reason`` attribute: ``malformed``,
    ``wrong_recipient``, ``not_decryptable``, ``unknown_signer``,
    ``bad_signature`` or ``wrong_type``.

    Opened with joserfc, like :func:`seal` (jwcrypto took half again as long,
    most of it copying its header registries for every object: the back
    end's rate rests on it). The headers are read and checked here before
    any key is used; the tests open every kind of envelope with jwcrypto too,
    an independent implementation.
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
        outer = rfc_jwe.decrypt_compact(token, _rfc_key(recipient.encryption, private=True), registry=_JWE_REGISTRY)
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
        inner = rfc_jws.deserialize_compact(inner_text, _rfc_key(key, private=False), registry=_JWS_REGISTRY)
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


def sign_compact(claims: dict[str, Any], key: jwk.JWK, *, typ: str) -> str:
    """``claims`` as a compact JWS signed with an Ed25519 key (``kid`` taken from the key).

    Signed, not encrypted: for what is shown as a QR code (provisioning
    codes, residents' credentials), where the camera must read it offline.
    """
    payload = json.dumps(claims, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    signed = jws.JWS(payload)
    header = {"alg": SIG_ALG, "kid": key.get("kid"), "typ": typ}
    signed.add_signature(key, alg=SIG_ALG, protected=json.dumps(header, separators=(",", ":")))
    return signed.serialize(compact=True)


def verify_compact(
    token: str | bytes, signer: Callable[[str], jwk.JWK | None], *, typ: str, max_bytes: int = 8192
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
    signed, protected = _parse_jws(token)
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
    try:
        signed.verify(key, alg=SIG_ALG)
    except (JWException, ValueError, TypeError) as e:
        raise _fail("bad_signature", f"signature does not verify: {e}") from None
    return _claims_of(signed), kid


def _parse_jws(text: str) -> tuple[jws.JWS, dict[str, Any]]:
    """A compact JWS and its protected header, not yet verified."""
    try:
        signed = jws.JWS()
        signed.deserialize(text)
        protected = json.loads(signed.objects["protected"])
    except (JWException, ValueError, TypeError, KeyError) as e:
        raise _fail("malformed", f"unreadable JWS: {e}") from None
    except RecursionError:
        raise _fail("malformed", "JWS header nested too deep") from None
    if not isinstance(protected, dict):
        raise _fail("malformed", "JWS header is not a JSON object")
    return signed, protected


def _claims_of(verified: jws.JWS) -> dict[str, Any]:
    """The claims of a verified JWS, which must be a JSON object."""
    return _claims_from(verified.payload)


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
