"""Helpers for the gallery-update tests: keys, residents, updates sealed right and wrong.

:class:`Admin` builds updates as ``kiosk-admin gallery publish`` does, and
also the forgeries the catalogue needs: claims that break the format,
JWS headers and payloads written by hand, ciphertexts cut or flipped.
"""

from __future__ import annotations

import base64
import json

import numpy as np
from jwcrypto import jwe, jws

from kiosk.match.gallery import Resident, gallery_digest
from kiosk.sync import keys as keymod
from kiosk.sync.updates.format import GALLERY_TYP, erase_op, new_update, seal_update, to_frames, upsert_op  # noqa: F401 (erase_op for the tests)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def vectors(rng: np.random.Generator, n: int = 1) -> list[np.ndarray]:
    """Unit-length-ish descriptors like dlib's (norm about 1), float32."""
    out = []
    for _ in range(n):
        v = rng.normal(size=128).astype(np.float32)
        out.append((v / np.linalg.norm(v)).astype(np.float32))
    return out


class World:
    """A gallery as the admin holds it: residents and their template vectors."""

    def __init__(self):
        self.residents: dict[str, Resident] = {}
        self.vectors: dict[str, list[np.ndarray]] = {}

    def put(self, resident: Resident, vecs: list[np.ndarray]) -> None:
        self.residents[resident.id] = resident
        self.vectors[resident.id] = list(vecs)

    def drop(self, rid: str) -> None:
        self.residents.pop(rid)
        self.vectors.pop(rid)

    def digest(self) -> str:
        return gallery_digest(self.residents, {r: [v.astype("<f4").tobytes() for v in vs] for r, vs in self.vectors.items()})

    def upserts(self, ids=None) -> list[dict]:
        return [upsert_op(self.residents[r], self.vectors[r]) for r in sorted(ids if ids is not None else self.residents)]


class Admin:
    """Signs and seals updates for devices (right, and on request wrong)."""

    def __init__(self, keys: keymod.PartyKeys | None = None):
        self.keys = keys or keymod.generate("admin")

    def claims(self, world: World, *, site: str, version: int, base, ops=None, **kw) -> dict:
        if ops is None:
            ops = world.upserts()
        return new_update(site=site, version=version, base=base, ops=ops, digest=kw.pop("digest", world.digest()), **kw)

    def seal(self, claims: dict, *devices: keymod.PartyKeys) -> str:
        return seal_update(claims, self.keys, [keymod.public_key(d.encryption) for d in devices])

    def frames(self, claims: dict, *devices: keymod.PartyKeys, max_bytes: int = 262144) -> list[bytes]:
        return to_frames(self.seal(claims, *devices), max_bytes)

    def seal_raw(self, payload: bytes, *devices: keymod.PartyKeys, header: dict | None = None, signer=None) -> str:
        """Sign any bytes (any JWS header) and encrypt them as an update would be."""
        key = (signer or self.keys).signing
        signed = jws.JWS(payload)
        hdr = header or {"alg": "Ed25519", "kid": key.get("kid"), "typ": GALLERY_TYP}
        signed.add_signature(key, alg="Ed25519", protected=json.dumps(hdr))
        return encrypt_raw(signed.serialize(compact=True).encode("ascii"), *devices)


def encrypt_raw(plaintext: bytes, *devices: keymod.PartyKeys, protected: dict | None = None) -> str:
    e = jwe.JWE(plaintext, protected=json.dumps(protected or {"enc": "A256GCM", "cty": "JWT"}))
    for d in devices:
        e.add_recipient(keymod.public_key(d.encryption), header=json.dumps({"alg": "ECDH-ES+A256KW", "kid": d.encryption_kid}))
    return e.serialize(compact=False)


def frame(text: str, *, sha: str | None = None, part: int = 0, parts: int = 1) -> bytes:
    import hashlib

    return json.dumps({"v": 1, "sha256": sha or hashlib.sha256(text.encode()).hexdigest(), "part": part,
                       "parts": parts, "data": text}, separators=(",", ":")).encode()





def device_state(root, site: str, device: str, admin_public: keymod.PartyKeys, backend: keymod.PartyKeys | None = None):
    """A device's state folder with its keys, the back end's and the admin's public keys; (path, device keys)."""
    from pathlib import Path

    state = Path(root)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = keymod.generate(f"{site}/{device}")
    keymod.save_private(state / "device.jwks", keys)
    keymod.save_public(state / "backend.pub.jwks", backend or keymod.generate("backend"))
    keymod.save_public(state / "admin.pub.jwks", admin_public)
    return state, keys


def mqtt_toml(broker, cn: str) -> str:
    """An [mqtt] table for ``broker`` with a client certificate for ``cn``."""
    cert, key = broker.pki.client(cn)
    return (
        f'[mqtt]\nenabled = true\nurl = "{broker.url}"\nca_file = "{broker.pki.ca_file}"\n'
        f'client_cert = "{cert}"\nclient_key = "{key}"\nkeepalive = 5\nconnect_timeout = 3.0\n'
        "reconnect_backoff_initial = 0.1\nreconnect_backoff_max = 1.0\nstatus_interval = 60.0\n"
    )


def device_toml(state, site: str, device: str, broker, extra: str = "") -> str:
    return (
        f'[device]\nsite = "{site}"\ndevice_id = "{device}"\nstate_dir = "{state}"\n'
        "[logging]\njournald = false\n" + mqtt_toml(broker, device) + extra
    )


class RecordingLink:
    """Stands in for the publisher: records subscriptions, sent messages and status requests."""

    def __init__(self):
        self.subscriptions: list[tuple[str, object]] = []
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self.status_requests = 0

    def subscribe(self, topics, handler, *, qos=1):
        self.subscriptions += [(t, handler) for t in topics]

    def send(self, topic, payload, *, qos=1, retain=False):
        self.sent.append((topic, payload.encode() if isinstance(payload, str) else payload, qos, retain))

    def request_status(self):
        self.status_requests += 1


class RecordingRecognizer:
    """Stands in for the recogniser: holds a gallery, records swaps; ``frames`` advances on demand."""

    class _Stats:
        frames = 0

    def __init__(self, gallery):
        self.gallery = gallery
        self.swaps: list = []
        self.stats = self._Stats()

    def swap_gallery(self, gallery):
        self.swaps.append(gallery)
        self.gallery = gallery
