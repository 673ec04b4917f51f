"""Opening gallery updates on a device: head, parts, JWE, JWS, format.

:class:`UpdateReceiver` takes MQTT payloads one by one and hands back a
verified :class:`~kiosk.sync.updates.format.GalleryUpdate` once every part
of it is in. Nothing is kept, put together or decrypted before an admin
vouched for it: an update starts with its head, signed by a pinned admin
key, naming its target, version, size and the SHA-256 of every part; the
head is checked (signature, size, and the device's own ``screen``: site,
devices, time, version) before a part is held, and a part is held only if
it hashes to what the head says. The parts held are bounded by the heads'
sizes (at most ``max_update_bytes`` in all) and count.

Then the JWE must hold a recipient with this device's key id and decrypt,
the JWS inside must be signed by a pinned admin key and typed as a gallery
update, the claims must follow the format and say what the head said.
Every failure is an :class:`~kiosk.errors.UpdateRejected` with its reason
(see :data:`~kiosk.sync.updates.format.REASONS`); ``quiet`` on it marks a
stray part that deserves no answer (counted, not acknowledged).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from joserfc import jwe as rfc_jwe
from joserfc._rfc7516.message import perform_decrypt  # what decrypt_compact runs (see _decrypt_for)
from joserfc.errors import JoseError
from pydantic import Field, ValidationError

from ...config import GallerySettings
from ...errors import EnvelopeError, UpdateRejected
from ..envelope import parse_jws, verified_payload, verify_compact
from ..keys import CONTENT_ENC, KEY_ALG, SIG_ALG, Key, KeyRing, PartyKeys
from .format import (
    _B64URL, _HEX64, GALLERY_TYP, HEAD_TYP, GalleryUpdate, UpdateHead, _Strict, _strict_json, parse_update, reject,
)

#: How many updates recently answered (or refused unannounced) are remembered, so that
#: their late or repeated parts are dropped without another answer.
RECENT = 64


class HeadFrame(_Strict):
    v: Literal[2]
    head: str


class PartFrame(_Strict):
    v: Literal[2]
    sha256: Annotated[str, Field(pattern=_HEX64)]
    part: int = Field(ge=0)
    data: str = Field(min_length=1)


@dataclass
class _Pending:
    head: UpdateHead
    first_seen: float
    chunks: dict[int, str] = field(default_factory=dict)
    size: int = 0


@dataclass(frozen=True)
class Received:
    """A verified update and the SHA-256 of the message(s) it came in."""

    update: GalleryUpdate
    message_sha256: str
    signer_kid: str


def _refusal(reason: str, message: str, *, sha256: str | None = None, head: UpdateHead | None = None,
             quiet: bool = False) -> UpdateRejected:
    e = reject(reason, message)
    e.sha256, e.head, e.quiet = sha256, head, quiet
    return e


class UpdateReceiver:
    """Turns gallery messages into verified updates: head, parts, JWE, JWS, format.

    Not thread-safe: one worker thread feeds it. Holds the parts of at most
    ``max_pending`` announced updates, each for ``part_timeout_s``, and at
    most ``max_update_bytes`` of parts in all.

    :param screen: the device's checks on a verified head before any part
        is kept (site, devices, time, version); raises UpdateRejected.
    """

    def __init__(self, device_keys: PartyKeys, admins: KeyRing, limits: GallerySettings, *,
                 clock: Callable[[], float] = time.monotonic, max_pending: int = 4,
                 screen: Callable[[UpdateHead], None] | None = None):
        if not device_keys.has_private:
            raise ValueError("the device's private keys are needed to decrypt updates")
        self.device_keys = device_keys
        self.admins = admins
        self.limits = limits
        self._clock = clock
        self._max_pending = max_pending
        self._screen = screen
        self._pending: dict[str, _Pending] = {}
        self._evicted: list[UpdateRejected] = []
        self._answered: OrderedDict[str, None] = OrderedDict()  # updates done with: their parts are late
        self._unknown: OrderedDict[str, None] = OrderedDict()  # unannounced updates refused once
        self.stray = 0  # parts dropped: unannounced, late, or not what their head says

    def offer(self, payload: bytes | str) -> Received | None:
        """One MQTT payload: the update once complete, None while parts are missing (or after a head).

        Raises :class:`UpdateRejected`; ``sha256`` on it names the update when
        known, ``head`` its verified head, and ``quiet`` marks a stray part.
        """
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if len(payload) > self.limits.max_message_bytes:
            raise reject("too_large", f"message of {len(payload)} bytes over {self.limits.max_message_bytes}")
        try:
            obj = _strict_json(payload)
            if isinstance(obj, dict) and obj.get("v") == 1:
                raise ValueError("a frame of format 1: the admin's kiosk-admin is older than this device "
                                 "(updates now start with a signed head)")
            frame = (HeadFrame if isinstance(obj, dict) and "head" in obj else PartFrame).model_validate(obj)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # ValidationError is a ValueError
            detail = e.errors(include_input=False, include_url=False)[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise reject("malformed", f"not a gallery frame: {detail[:120]}") from None
        if isinstance(frame, HeadFrame):
            self._announce(frame.head)
            return None
        text = self._assemble(frame)
        if text is None:
            return None
        head = self._pending.pop(frame.sha256).head
        self._remember(self._answered, frame.sha256)
        try:
            update, kid = self.open(text)
            if not head.announces(update):
                raise reject("head_mismatch", "the update's id, target, version or times are not its head's")
        except UpdateRejected as e:
            e.sha256, e.head, e.quiet = frame.sha256, head, False
            raise
        return Received(update, frame.sha256, kid)

    # -- the head -------------------------------------------------------------

    def _announce(self, token: str) -> None:
        def signer(kid: str):
            found = self.admins.signer(kid)
            return found[1] if found else None

        try:
            claims, _ = verify_compact(token, signer, typ=HEAD_TYP, max_bytes=self.limits.max_message_bytes)
        except EnvelopeError as e:
            reason = getattr(e, "reason", "malformed")
            detail = ("head signed by a key that is not a pinned admin key" if reason == "unknown_signer"
                      else f"update head: {str(e).split(': ', 1)[-1][:120]}")
            # Its parts will follow: one answer (this one) for the whole update, not one per part.
            sha = _claimed_sha256(token)
            if sha:
                self._remember(self._unknown, sha)
            raise _refusal(reason, detail, sha256=sha) from None
        try:
            head = UpdateHead.model_validate(claims)
        except ValidationError as e:
            err = e.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(x) for x in err["loc"]) or "(top)"
            sha = _claimed_sha256(token)
            if sha:
                self._remember(self._unknown, sha)
            raise _refusal("schema", f"update head: {where}: {err['msg'][:120]}", sha256=sha) from None
        sha = head.sha256
        if sha in self._pending or sha in self._answered:
            return  # the same head again (QoS 1 may deliver twice)
        if head.size > self.limits.max_update_bytes or head.size > len(head.parts) * self.limits.max_message_bytes:
            self._remember(self._answered, sha)
        if head.size > self.limits.max_update_bytes:
            raise _refusal("too_large", f"update of {head.size} bytes over {self.limits.max_update_bytes}",
                           sha256=sha, head=head)
        if head.size > len(head.parts) * self.limits.max_message_bytes:
            raise _refusal("schema", "update head: parts too large for a message", sha256=sha, head=head)
        if self._screen is not None:
            try:
                self._screen(head)
            except UpdateRejected as e:
                self._remember(self._answered, sha)
                e.sha256, e.head, e.quiet = sha, head, False
                raise
        if len(self._pending) >= self._max_pending:
            self._evict(self._oldest(), "more updates in parts at once than the device holds")
        # All the parts that may be held, together, stay under one update's worth of memory.
        while self._pending and self._declared() + head.size > self.limits.max_update_bytes:
            self._evict(self._oldest(), "parts of newer updates took their room")
        self._pending[sha] = _Pending(head, self._clock())

    # -- the parts ------------------------------------------------------------

    def _assemble(self, frame: PartFrame) -> str | None:
        sha = frame.sha256
        p = self._pending.get(sha)
        if p is None:
            self.stray += 1
            if sha in self._answered:
                raise _refusal("unannounced", "a late part of an update already answered", sha256=sha, quiet=True)
            quiet = sha in self._unknown
            self._remember(self._unknown, sha)
            raise _refusal("unannounced", "a part of an update no admin-signed head announced; nothing of it is kept",
                           sha256=sha, quiet=quiet)
        digest = hashlib.sha256(frame.data.encode("utf-8")).hexdigest()
        if frame.part >= len(p.head.parts) or digest != p.head.parts[frame.part]:
            self.stray += 1
            raise _refusal("checksum_mismatch", f"part {frame.part} is not the one its head names", sha256=sha,
                           quiet=True)
        if frame.part in p.chunks:
            return None  # the same part again
        p.chunks[frame.part] = frame.data
        p.size += len(frame.data.encode("utf-8"))
        if len(p.chunks) < len(p.head.parts):
            return None
        text = "".join(p.chunks[i] for i in range(len(p.head.parts)))
        if len(text.encode("utf-8")) != p.head.size or hashlib.sha256(text.encode("utf-8")).hexdigest() != sha:
            del self._pending[sha]
            self._remember(self._answered, sha)
            raise _refusal("checksum_mismatch", "the update's parts do not hash to its head's SHA-256", sha256=sha,
                           head=p.head)
        return text

    def _remember(self, recent: OrderedDict, sha: str) -> None:
        recent[sha] = None
        recent.move_to_end(sha)
        while len(recent) > RECENT:
            recent.popitem(last=False)

    def _declared(self) -> int:
        return sum(p.head.size for p in self._pending.values())

    def _oldest(self) -> str:
        return min(self._pending, key=lambda k: self._pending[k].first_seen)

    def _evict(self, sha: str, why: str) -> None:
        p = self._pending.pop(sha)
        self._remember(self._answered, sha)
        n = len(p.head.parts)
        self._evicted.append(_refusal("parts_missing", f"{n - len(p.chunks)} of {n} parts missing: {why}",
                                      sha256=sha, head=p.head))

    def expire(self) -> list[UpdateRejected]:
        """Drop part-assembled updates older than the part timeout (or evicted); one refusal each."""
        now = self._clock()
        out, self._evicted = self._evicted, []
        for sha, p in list(self._pending.items()):
            if now - p.first_seen > self.limits.part_timeout_s:
                del self._pending[sha]
                self._remember(self._answered, sha)
                n = len(p.head.parts)
                out.append(_refusal("parts_missing", f"{n - len(p.chunks)} of {n} parts missing after "
                                    f"{self.limits.part_timeout_s:g}s", sha256=sha, head=p.head))
        return out

    def forget(self) -> None:
        """Drop every part held and every update remembered, as a restart does."""
        self._pending.clear()
        self._evicted.clear()
        self._answered.clear()
        self._unknown.clear()

    @property
    def pending(self) -> int:
        """Updates announced whose parts are being collected."""
        return len(self._pending)

    @property
    def held_bytes(self) -> int:
        """Bytes of parts held, in all."""
        return sum(p.size for p in self._pending.values())

    def open(self, text: str) -> tuple[GalleryUpdate, str]:
        """Decrypt, verify and parse a whole sealed update; (update, signing key id)."""
        inner = self._decrypt(text)
        payload, kid = self._verify(inner)
        return parse_update(payload, self.limits), kid

    def _decrypt(self, text: str) -> str:
        try:
            outer = _strict_json(text)
        except (ValueError, RecursionError) as e:
            raise reject("malformed", f"not a JWE (JSON serialization): {e}") from None
        if not isinstance(outer, dict):
            raise reject("malformed", "not a JWE (JSON serialization)")
        if "recipients" in outer:  # general serialization; one recipient gives the flattened form
            recipients = outer["recipients"]
            if not isinstance(recipients, list) or "header" in outer or "encrypted_key" in outer:
                raise reject("malformed", "JWE recipients are not a list")
        else:
            recipients = [{"header": outer.get("header"), "encrypted_key": outer.get("encrypted_key")}]
        try:
            protected = _strict_json(base64.urlsafe_b64decode(_padded(outer["protected"])))
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise reject("malformed", f"unreadable JWE protected header: {e}") from None
        if not isinstance(protected, dict) or protected.get("enc") != CONTENT_ENC or "zip" in protected:
            raise reject("malformed", f"JWE content encryption must be {CONTENT_ENC}, uncompressed")
        if "unprotected" in outer or "aad" in outer:
            raise reject("malformed", "unexpected JWE members")
        mine = self.device_keys.encryption_kid
        ours = [r for r in recipients if isinstance(r, dict) and isinstance(r.get("header"), dict)
                and r["header"].get("kid") == mine]
        if not ours:
            raise reject("wrong_recipient", "not encrypted to this device's key")
        header = ours[0]["header"]
        if header.get("alg") != KEY_ALG or "zip" in header or "enc" in header:
            raise reject("malformed", f"JWE key management must be {KEY_ALG}")
        try:
            return _decrypt_for(outer, header, ours[0].get("encrypted_key", ""), self.device_keys.encryption,
                                self.limits.max_update_bytes).decode("ascii")
        except (JoseError, ValueError, TypeError, KeyError, AttributeError, AssertionError, UnicodeDecodeError) as e:
            raise reject("not_decryptable", f"cannot decrypt: {type(e).__name__}") from None

    def _verify(self, inner: str) -> tuple[bytes, str]:
        if inner.count(".") != 2:
            raise reject("malformed", "encrypted content is not a compact JWS")
        try:
            protected, _ = parse_jws(inner, loads=_strict_json)
        except EnvelopeError:
            raise reject("malformed", "unreadable JWS: not base64url, or its header not a JSON object") from None
        if set(protected) - {"alg", "kid", "typ"}:
            raise reject("malformed", "JWS header must hold alg, kid and typ only")
        if protected.get("alg") != SIG_ALG:
            raise reject("bad_signature", f"signature algorithm {str(protected.get('alg'))[:40]!r} is not {SIG_ALG}")
        kid = protected.get("kid")
        found = self.admins.signer(kid) if isinstance(kid, str) else None
        if found is None:
            raise reject("unknown_signer", "signed by a key that is not a pinned admin key")
        payload = verified_payload(inner, found[1], max_bytes=self.limits.max_update_bytes)
        if payload is None:
            raise reject("bad_signature", "the signature does not verify")
        # Typed after the signature: a forged type never gets this far.
        if protected.get("typ") != GALLERY_TYP:
            raise reject("wrong_type", f"message type {str(protected.get('typ'))[:40]!r}, not {GALLERY_TYP}")
        return payload, kid


def _decrypt_for(outer: dict, header: dict, encrypted_key: str, key: Key, max_bytes: int) -> bytes:
    """The plaintext of a JWE JSON for one recipient (its ``header`` and ``encrypted_key``), with joserfc.

    joserfc's own ``decrypt_json`` authenticates a re-encoding of the
    protected header, not the header as received (RFC 7516 §5.2 step 14
    wants the latter), so it refuses a JWE whose header another library
    spaced differently: the updates of an older kiosk-admin. The message is
    built here as ``decrypt_compact`` builds one, with the header as received
    for the AAD, and only this key agreement and cipher are allowed; the
    headers were checked by the caller.
    """
    # base64url strings, each of them (ValueError otherwise), before anything else is done.
    decoded = {name: base64.urlsafe_b64decode(_padded(outer.get(name))) for name in ("iv", "ciphertext", "tag")}
    protected = _strict_json(base64.urlsafe_b64decode(_padded(outer.get("protected"))))
    cek = base64.urlsafe_b64decode(_padded(encrypted_key))
    if not isinstance(protected, dict) or set(protected) & set(header):
        raise ValueError("the protected and the recipient's header must not share a name (RFC 7516 §7.2.1)")
    registry = rfc_jwe.JWERegistry(algorithms=[KEY_ALG, CONTENT_ENC])
    # The update's size is bounded by its head (max_update_bytes); joserfc's defaults are for web tokens.
    registry.max_ciphertext_length = max_bytes
    segments = {name: outer[name].encode("ascii") for name in decoded}
    registry.validate_protected_header_size(outer["protected"].encode("ascii"))
    registry.validate_initialization_vector_size(segments["iv"])
    registry.validate_ciphertext_size(segments["ciphertext"])
    registry.validate_auth_tag_size(segments["tag"])
    key.check_use("enc")
    message = rfc_jwe.CompactEncryption({**header, **protected})
    message.base64_segments = {"aad": outer["protected"].encode("ascii"), **segments}
    message.bytes_segments = decoded
    recipient = rfc_jwe.Recipient(message, None, key)
    recipient.encrypted_key = cek
    message.recipient = recipient
    perform_decrypt(message, registry)
    return message.plaintext


def _claimed_sha256(token: str) -> str | None:
    """The ``sha256`` a head that failed its checks claims (unverified: only to answer its update once)."""
    try:
        claims = json.loads(base64.urlsafe_b64decode(_padded(token.split(".")[1])))
        sha = claims.get("sha256") if isinstance(claims, dict) else None
    except (ValueError, IndexError, AttributeError, TypeError, RecursionError):
        return None
    return sha if isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha) else None


def _padded(text: str) -> str:
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return text + "=" * (-len(text) % 4)
