"""Helpers for the gallery-update tests: keys, residents, updates sealed right and wrong.

:class:`Admin` builds updates as ``kiosk-admin gallery publish`` does, and
also the forgeries the catalogue needs: claims that break the format,
JWS headers and payloads written by hand, ciphertexts cut or flipped.
"""

from __future__ import annotations

import base64
import json
import time

import numpy as np
from jose_cross import to_jwcrypto
from jwcrypto import jwe, jws

from kiosk.gallery.store import Resident, gallery_digest
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
        """The head, then the parts, as ``kiosk-admin gallery publish`` sends them."""
        return to_frames(self.seal(claims, *devices), claims, self.keys, max_bytes)

    def wrap(self, sealed: str, claims: dict, max_bytes: int = 262144) -> list[bytes]:
        """Any text (a forgery inside) framed behind a head this admin signs for ``claims``."""
        return to_frames(sealed, claims, self.keys, max_bytes)

    def seal_raw(self, payload: bytes, *devices: keymod.PartyKeys, header: dict | None = None, signer=None) -> str:
        """Sign any bytes (any JWS header) and encrypt them as an update would be."""
        key = (signer or self.keys).signing
        signed = jws.JWS(payload)
        hdr = header or {"alg": "Ed25519", "kid": key.get("kid"), "typ": GALLERY_TYP}
        signed.add_signature(to_jwcrypto(key), alg="Ed25519", protected=json.dumps(hdr))
        return encrypt_raw(signed.serialize(compact=True).encode("ascii"), *devices)


def encrypt_raw(plaintext: bytes, *devices: keymod.PartyKeys, protected: dict | None = None) -> str:
    e = jwe.JWE(plaintext, protected=json.dumps(protected or {"enc": "A256GCM", "cty": "JWT"}))
    for d in devices:
        e.add_recipient(to_jwcrypto(keymod.public_key(d.encryption)), header=json.dumps({"alg": "ECDH-ES+A256KW", "kid": d.encryption_kid}))
    return e.serialize(compact=False)


def part_frame(data: str, *, sha: str | None = None, part: int = 0) -> bytes:
    """A part frame as anyone can write one (no head, no signature)."""
    import hashlib

    return json.dumps({"v": 2, "sha256": sha or hashlib.sha256(data.encode()).hexdigest(), "part": part,
                       "data": data}, separators=(",", ":")).encode()





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
        "[logging]\njournald = false\n" + mqtt_toml(broker, f"{site}/{device}") + extra
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


class KioskSite:
    """A running kiosk (:class:`kiosk.daemon.Kiosk`, MQTT on, a live camera on an empty scene), its admin,
    and the back end's MQTT client (``probe``), for tests that send it updates over a real broker."""

    def __init__(self, broker, root, *, site: str = "elm-court", device: str = "door-1", max_message: int = 65536,
                 extra: str = ""):
        import threading

        from .broker import MqttProbe
        from kiosk.capture.replay import ReplaySource
        from kiosk.config import parse_config
        from kiosk.daemon import Kiosk

        self.site, self.device = site, device
        self.admin = Admin()
        self.state, self.keys = device_state(root / "state", site, device, self.admin.keys.public())
        self.config = parse_config(device_toml(self.state, site, device, broker,
                                               f"[liveness]\nenabled = false\n[gallery]\npart_timeout_s = 1.5\n"
                                               f"max_message_bytes = {max_message}\n" + extra))
        self.max_message = max_message
        self.world = World()
        self.rng = np.random.default_rng(2024)
        source = ReplaySource([np.zeros((240, 320, 3), np.uint8)], live=True, loop=True, fps=10.0)
        self.kiosk = Kiosk(self.config, source=source)
        self.kiosk.start()
        self.runner = threading.Thread(target=self.kiosk.run, name="kiosk-under-test", daemon=True)
        self.runner.start()
        self.probe = MqttProbe(broker, "backend")
        self.ack_topic = f"kiosk/{site}/{device}/ack"
        self.status_topic = f"kiosk/{site}/{device}/status"
        self.site_topic = f"kiosk/{site}/gallery"
        self.device_topic = f"kiosk/{site}/{device}/gallery"
        self.probe.subscribe(self.ack_topic)
        self.probe.subscribe(self.status_topic)
        self.ring = keymod.KeyRing([self.keys.public()])
        # The device's first signed ack ("holding") goes out after its SUBSCRIBE on the same connection: once it is
        # here the device takes what is sent (otherwise the broker may answer 16, no subscriber yet). An earlier
        # test's retained ack is another key's, and does not count.
        deadline = time.monotonic() + 30
        while not self._holding_heard() and time.monotonic() < deadline:
            self.probe.wait_messages(len(self.probe.messages) + 1, timeout=0.2)
        assert self._holding_heard(), "the device never said what it holds"

    def _holding_heard(self) -> bool:
        from kiosk.sync.updates.format import verify_ack

        for p in self.acks():
            try:
                if verify_ack(p, self.ring)["result"] == "holding":
                    return True
            except Exception:  # noqa: BLE001 - another device's (an earlier test's retained ack)
                continue
        return False

    @property
    def sync(self):
        return self.kiosk.gallery_sync

    @property
    def version(self) -> int:
        return self.sync.version

    def acks(self) -> list[bytes]:
        return [p for t, p, _ in self.probe.messages if t == self.ack_topic]

    def answers(self, since: int = 0) -> list[dict]:
        """The device's acks after the first ``since`` (verified), but for the ``holding`` it sends at start."""
        from kiosk.sync.updates.format import verify_ack

        return [a for a in (verify_ack(p, self.ring) for p in self.acks()[since:]) if a["result"] != "holding"]

    def send(self, frames: list[bytes], topic: str | None = None, timeout: float = 15.0) -> dict:
        """Publish ``frames`` as the back end and return the device's next answer (verified)."""
        import time

        n = len(self.acks())
        for f in frames:
            assert self.probe.publish(topic or self.site_topic, f) == 0
        deadline = time.monotonic() + timeout
        while not self.answers(n) and time.monotonic() < deadline:
            self.probe.wait_messages(len(self.probe.messages) + 1, timeout=0.2)
        got = self.answers(n)
        assert got, "the device did not answer"
        return got[0]

    def snapshot(self):
        """What must not change on a refusal."""
        from kiosk.gallery.store import open_store

        store = open_store(self.config)
        try:
            rows = store.db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
            return (self.sync.version, self.sync.digest, id(self.kiosk.recognizer.gallery), store.digest(),
                    store.version(), rows)
        finally:
            store.db.close()

    def claims(self, *, ops=None, version=None, base=None, world=None, **kw) -> dict:
        """A valid delta on the held version (one new resident unless ``ops``), without changing the world."""
        import copy

        w = copy.deepcopy(world or self.world)
        if ops is None:
            rid = f"R-{len(w.residents) + 100:04d}"
            w.put(Resident(rid, f"Name {rid}"), vectors(self.rng, 1))
            ops = w.upserts([rid])
        v = self.version
        return self.admin.claims(w, site=self.site, version=version or v + 1, base=v if base is None else base,
                                 ops=ops, **kw)

    def frames(self, claims: dict, *devices) -> list[bytes]:
        return self.admin.frames(claims, *(devices or (self.keys,)), max_bytes=self.max_message)

    def apply_good(self, n: int = 1) -> dict:
        """Enroll ``n`` new residents with a valid delta; the world follows."""
        ids = []
        for _ in range(n):
            rid = f"R-{len(self.world.residents) + 100:04d}"
            self.world.put(Resident(rid, f"Name {rid}"), vectors(self.rng, 2))
            ids.append(rid)
        v = self.version
        claims = self.admin.claims(self.world, site=self.site, version=v + 1, base=v, ops=self.world.upserts(ids))
        ack = self.send(self.frames(claims))
        assert ack["result"] == "applied" and ack["digest"] == self.world.digest(), ack
        return claims

    def alive(self) -> bool:
        return self.runner.is_alive() and self.sync.alive and self.kiosk.capture.healthy

    def close(self) -> None:
        self.probe.close()
        self.kiosk.request_stop()
        self.runner.join(10)
        self.kiosk.stop()


def refused_quietly(check, claims, junk: str) -> bool:
    """``check(claims)``: False if it accepts them; True if it refuses them as ``bad_claims`` without repeating
    ``junk`` (a refusal names the claim, never its value); any other outcome fails the test."""
    from kiosk.errors import EnvelopeError

    try:
        check(claims)
    except EnvelopeError as e:
        assert e.reason == "bad_claims", e
        assert len(junk) < 12 or junk not in str(e), "a refusal names the claim, never its value"
        return True
    return False
