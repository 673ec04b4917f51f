"""Opening gallery updates on a device: frames, parts, JWE, JWS, format.

:class:`UpdateReceiver` takes MQTT payloads one by one and hands back a
verified :class:`~kiosk.sync.updates.format.GalleryUpdate` once every part of it
is in: the JWE must hold a recipient with this device's key id and decrypt,
the JWS inside must be signed by a pinned admin key and typed as a gallery
update, and the claims must follow the format. Every failure is an
:class:`~kiosk.errors.UpdateRejected` with its reason (see
:data:`~kiosk.sync.updates.format.REASONS`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from jwcrypto import jwe, jws
from jwcrypto.common import JWException
from pydantic import Field, ValidationError, model_validator

from ...config import GallerySettings
from ...errors import UpdateRejected
from ..keys import CONTENT_ENC, KEY_ALG, SIG_ALG, KeyRing, PartyKeys
from .format import _B64URL, _HEX64, GALLERY_TYP, GalleryUpdate, _Strict, _strict_json, parse_update, reject


class Frame(_Strict):
    v: Literal[1]
    sha256: Annotated[str, Field(pattern=_HEX64)]
    part: int = Field(ge=0)
    parts: int = Field(ge=1, le=1_000_000)
    data: str

    @model_validator(mode="after")
    def _index(self):
        if self.part >= self.parts:
            raise ValueError("part must be below parts")
        return self


@dataclass
class _Pending:
    parts: int
    first_seen: float
    chunks: dict[int, str] = field(default_factory=dict)
    size: int = 0


@dataclass(frozen=True)
class Received:
    """A verified update and the SHA-256 of the message(s) it came in."""

    update: GalleryUpdate
    message_sha256: str
    signer_kid: str


class UpdateReceiver:
    """Turns gallery messages into verified updates: frames, parts, JWE, JWS, format.

    Not thread-safe: one worker thread feeds it. Holds at most
    ``max_pending`` part-assembled updates, each for ``part_timeout_s``.
    """

    def __init__(self, device_keys: PartyKeys, admins: KeyRing, limits: GallerySettings, *,
                 clock: Callable[[], float] = time.monotonic, max_pending: int = 4):
        if not device_keys.has_private:
            raise ValueError("the device's private keys are needed to decrypt updates")
        self.device_keys = device_keys
        self.admins = admins
        self.limits = limits
        self._clock = clock
        self._max_pending = max_pending
        self._pending: dict[str, _Pending] = {}
        self._evicted: list[UpdateRejected] = []

    def offer(self, payload: bytes | str) -> Received | None:
        """One MQTT payload: the update once complete, None while parts are missing.

        Raises :class:`UpdateRejected`; ``sha256`` on it names the message when known.
        """
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if len(payload) > self.limits.max_message_bytes:
            raise reject("too_large", f"message of {len(payload)} bytes over {self.limits.max_message_bytes}")
        try:
            frame = Frame.model_validate(_strict_json(payload))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # ValidationError is a ValueError
            detail = e.errors(include_input=False, include_url=False)[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise reject("malformed", f"not a gallery frame: {detail[:120]}") from None
        try:
            text = self._assemble(frame)
            if text is None:
                return None
            update, kid = self.open(text)
        except UpdateRejected as e:
            e.sha256 = frame.sha256
            raise
        return Received(update, frame.sha256, kid)

    def _assemble(self, frame: Frame) -> str | None:
        if frame.parts == 1:
            text = frame.data
        else:
            p = self._pending.get(frame.sha256)
            if p is None:
                if len(self._pending) >= self._max_pending:
                    self._evict(self._oldest(), "more updates in parts at once than the device holds")
                p = self._pending[frame.sha256] = _Pending(frame.parts, self._clock())
            if p.parts != frame.parts:
                del self._pending[frame.sha256]
                raise reject("parts_mixed", f"a part says {frame.parts} parts, an earlier one {p.parts}")
            old = p.chunks.get(frame.part)
            if old is not None and old != frame.data:
                del self._pending[frame.sha256]
                raise reject("parts_mixed", f"part {frame.part} came twice with different data")
            if old is None:
                p.chunks[frame.part] = frame.data
                p.size += len(frame.data)
            if p.size > self.limits.max_update_bytes:
                del self._pending[frame.sha256]
                raise reject("too_large", f"update over {self.limits.max_update_bytes} bytes")
            # All the parts held, together, stay under one update's worth of memory.
            while sum(q.size for q in self._pending.values()) > self.limits.max_update_bytes:
                self._evict(self._oldest(but=frame.sha256), "parts of newer updates took their room")
            if len(p.chunks) < p.parts:
                return None
            del self._pending[frame.sha256]
            text = "".join(p.chunks[i] for i in range(p.parts))
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != frame.sha256:
            raise reject("checksum_mismatch", "the update's parts do not hash to its SHA-256")
        return text

    def _oldest(self, but: str | None = None) -> str:
        return min((k for k in self._pending if k != but), key=lambda k: self._pending[k].first_seen)

    def _evict(self, sha: str, why: str) -> None:
        p = self._pending.pop(sha)
        e = reject("parts_missing", f"{p.parts - len(p.chunks)} of {p.parts} parts missing: {why}")
        e.sha256 = sha
        self._evicted.append(e)

    def expire(self) -> list[UpdateRejected]:
        """Drop part-assembled updates older than the part timeout (or evicted); one refusal each."""
        now = self._clock()
        out, self._evicted = self._evicted, []
        for sha, p in list(self._pending.items()):
            if now - p.first_seen > self.limits.part_timeout_s:
                del self._pending[sha]
                e = reject("parts_missing", f"{p.parts - len(p.chunks)} of {p.parts} parts missing after "
                           f"{self.limits.part_timeout_s:g}s")
                e.sha256 = sha
                out.append(e)
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)

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
        flat = {k: outer[k] for k in ("protected", "iv", "ciphertext", "tag") if k in outer}
        flat.update(header=header, encrypted_key=ours[0].get("encrypted_key", ""))
        try:
            token = jwe.JWE(algs=[KEY_ALG, CONTENT_ENC])
            token.deserialize(json.dumps(flat))
            token.decrypt(self.device_keys.encryption)
            return token.payload.decode("ascii")
        except (JWException, ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
            raise reject("not_decryptable", f"cannot decrypt: {type(e).__name__}") from None

    def _verify(self, inner: str) -> tuple[bytes, str]:
        if inner.count(".") != 2:
            raise reject("malformed", "encrypted content is not a compact JWS")
        try:
            signed = jws.JWS()
            signed.deserialize(inner)
            protected = _strict_json(signed.objects["protected"])
        except (JWException, ValueError, TypeError, KeyError) as e:
            raise reject("malformed", f"unreadable JWS: {type(e).__name__}") from None
        if not isinstance(protected, dict) or set(protected) - {"alg", "kid", "typ"}:
            raise reject("malformed", "JWS header must hold alg, kid and typ only")
        if protected.get("alg") != SIG_ALG:
            raise reject("bad_signature", f"signature algorithm {str(protected.get('alg'))[:40]!r} is not {SIG_ALG}")
        kid = protected.get("kid")
        found = self.admins.signer(kid) if isinstance(kid, str) else None
        if found is None:
            raise reject("unknown_signer", "signed by a key that is not a pinned admin key")
        try:
            signed.verify(found[1], alg=SIG_ALG)
        except (JWException, ValueError, TypeError):
            raise reject("bad_signature", "the signature does not verify") from None
        # Typed after the signature: a forged type never gets this far.
        if protected.get("typ") != GALLERY_TYP:
            raise reject("wrong_type", f"message type {str(protected.get('typ'))[:40]!r}, not {GALLERY_TYP}")
        return signed.payload, kid


def _padded(text: str) -> str:
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return text + "=" * (-len(text) % 4)
