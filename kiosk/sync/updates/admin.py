"""The admin's side of gallery updates: what to send each device, and the record of what was sent.

The admin's enrollment database (the one ``kiosk-admin enroll`` fills) is
the source. Its ledger (``gallery_publications``, ``gallery_published``)
remembers, per site, each version published and every resident's
fingerprint as last published, so that the next update is a delta against
what the site holds. Each device's own word on what it holds comes from its
signed acks alone (an ack after each update, and one at start: ``holding``),
checked against its public key; the newest verified ack of each device is
remembered in the ledger, so that a retained ack or status someone else
wrote on its topics (forged, replayed, or another device's) changes nothing.
The retained status only tells online from offline, for display.

:func:`plan` decides what to send:

- ``--snapshot``, or a device holding a version the ledger cannot explain
  (ahead of it, or at it with another hash): one snapshot of a new version,
  site-wide;
- residents changed: a delta of a new version on the site topic, plus a
  snapshot on the device topic of each device known to be behind;
- nothing changed: a snapshot of the current version to each device behind.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from ...config import MqttSettings
from ...db import get_meta, set_meta
from ...errors import BrokerUnavailable, EnvelopeError
from ...gallery.store import GalleryStore, Resident, gallery_digest
from ..keys import KeyRing, PartyKeys
from ..mqtt import FAILURE, TlsFiles, new_client, reason_value, topic_of
from .format import SNAPSHOT, erase_op, new_update, seal_update, to_frames, upsert_op, verify_ack

log = logging.getLogger(__name__)


# -- the admin's gallery and its ledger ----------------------------------------------


@dataclass(frozen=True)
class AdminGallery:
    """Everything in the admin's database, decrypted: residents, templates, fingerprints, digest."""

    residents: dict[str, Resident]
    vectors: dict[str, list[np.ndarray]]
    fingerprints: dict[str, str]
    digest: str

    @classmethod
    def read(cls, store: GalleryStore) -> "AdminGallery":
        """Read and decrypt; a resident without templates cannot be published and is left out."""
        vectors: dict[str, list[np.ndarray]] = {}
        for rid, blob in store.db.execute("SELECT resident_id, vector FROM templates ORDER BY resident_id, id"):
            vectors.setdefault(rid, []).append(store.cipher.open(blob, rid))
        residents = {rid: r for rid, r in store.residents().items() if rid in vectors}
        raw = {rid: [v.astype("<f4").tobytes() for v in vs] for rid, vs in vectors.items()}
        fingerprints = {rid: gallery_digest({rid: r}, {rid: raw.get(rid, [])}) for rid, r in residents.items()}
        return cls(residents, vectors, fingerprints, gallery_digest(residents, raw))

    def upserts(self, ids=None) -> list[dict[str, Any]]:
        """Upsert operations for ``ids`` (default: everyone), in id order."""
        return [upsert_op(self.residents[r], self.vectors[r]) for r in sorted(self.residents if ids is None else ids)]


@dataclass(frozen=True)
class Publication:
    site: str
    version: int
    kind: str
    update_id: str
    digest: str
    residents: int
    published_at: float


class Ledger:
    """What was published to one site, in the admin's database."""

    def __init__(self, store: GalleryStore, site: str):
        self.db = store.db
        self.site = site

    def last(self) -> Publication | None:
        row = self.db.execute(
            "SELECT site, version, kind, update_id, digest, residents, published_at FROM gallery_publications"
            " WHERE site = ? ORDER BY version DESC LIMIT 1", [self.site]).fetchone()
        return Publication(*row) if row else None

    def digest_of(self, version: int) -> str | None:
        row = self.db.execute("SELECT digest FROM gallery_publications WHERE site = ? AND version = ?",
                              [self.site, version]).fetchone()
        return row[0] if row else None

    def published(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT resident_id, fingerprint FROM gallery_published WHERE site = ?",
                                    [self.site]).fetchall())

    def known(self, views: dict[str, DeviceView], devices) -> dict[str, DeviceView]:
        """Each device's view on the newest verified ack ever seen: the retained one or the one remembered.

        A retained ack that does not verify (or an older one, replayed)
        leaves the remembered one in force; a newer verified one is
        remembered from now on.
        """
        out = {}
        for device in devices:
            view = views.get(device) or DeviceView(device)
            key = f"gallery_ack/{self.site}/{device}"
            stored = get_meta(self.db, key)
            if stored:
                try:
                    claims = json.loads(stored)
                except ValueError:
                    claims = None
                if isinstance(claims, dict):
                    before, before_time = view.ack, view.time
                    view.take_ack(claims)
                    # Only a remembered ack strictly newer than the retained one says the retained one is old;
                    # the same ack again (the usual case: nothing new since last time) is no replay.
                    if before is not None and view.ack_error is None and view.time > before_time:
                        view.ack_error = "a retained ack older than the one remembered (replayed?)"
            if view.ack is not None:
                with self.db.atomic():
                    set_meta(self.db, key, json.dumps(view.ack, sort_keys=True))
            out[device] = view
        return out

    def record(self, version: int, kind: str, update_id: str, gallery: AdminGallery, now: float | None = None) -> None:
        """The site now holds ``gallery`` as ``version`` (one transaction)."""
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO gallery_publications(site, version, kind, update_id, digest, residents, published_at)"
                " VALUES (?,?,?,?,?,?,?)",
                [self.site, version, kind, update_id, gallery.digest, len(gallery.residents), now or time.time()])
            self.db.execute("DELETE FROM gallery_published WHERE site = ?", [self.site])
            self.db.conn.executemany(
                "INSERT INTO gallery_published(site, resident_id, fingerprint) VALUES (?,?,?)",
                [(self.site, rid, fp) for rid, fp in gallery.fingerprints.items()])


# -- what each device holds -------------------------------------------------------------


@dataclass
class DeviceView:
    """A device's latest word, from its signed acks (the status only says online/offline, for display)."""

    device: str
    version: int | None = None
    digest: str | None = None
    wants_snapshot: bool = False
    time: float = 0.0
    state: str | None = None  # online/offline, from the (unsigned) status: never planned on
    ack: dict[str, Any] | None = None
    ack_error: str | None = None

    def take_ack(self, claims: dict[str, Any]) -> None:
        """A verified ack of this device; an older one than held changes nothing."""
        t = claims.get("time")
        if not isinstance(t, (int, float)) or (self.ack is not None and t < self.time):
            return
        self.ack, self.time = claims, float(t)
        self.version, self.digest = _int(claims.get("version")), claims.get("digest")
        if claims.get("result") in ("applied", "holding"):
            self.wants_snapshot = False
        elif claims.get("reason") in ("version_gap", "base_mismatch", "digest_mismatch"):
            self.wants_snapshot = True

    def take_status(self, status: dict[str, Any]) -> None:
        state = status.get("state")
        self.state = state if isinstance(state, str) else None


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return None


# -- the plan ----------------------------------------------------------------------------


@dataclass
class Send:
    """One update to publish: to the site topic (``device`` None) or one device's topic."""

    claims: dict[str, Any]
    recipients: list[str]
    device: str | None = None

    @property
    def kind(self) -> str:
        return SNAPSHOT if self.claims["base"] == SNAPSHOT else "delta"


@dataclass
class Plan:
    sends: list[Send] = field(default_factory=list)
    record: tuple[int, str, str] | None = None  # (version, kind, update_id) for the ledger once published
    why: str = ""


def plan(gallery: AdminGallery, ledger: Ledger, devices: list[str], views: dict[str, DeviceView], *,
         force_snapshot: bool = False, lifetime_s: float = 7 * 86400, now: float | None = None,
         match: dict[str, Any] | None = None) -> Plan:
    """What to send ``devices`` of the ledger's site (see the module docstring).

    ``match``: a stricter target for the site's doors (``kiosk-admin gallery match``), carried by the new
    version: a delta without operations when nothing else changed.
    """
    site = ledger.site
    last = ledger.last()
    held = last.version if last else 0
    published = ledger.published()
    changed = sorted(r for r in gallery.fingerprints if published.get(r) != gallery.fingerprints[r])
    gone = sorted(set(published) - set(gallery.fingerprints))
    row = ledger.db.execute("SELECT MAX(version) FROM gallery_publications WHERE site = ?", [site]).fetchone()
    new_version = (row[0] or 0) + 1

    def view(d: str) -> DeviceView | None:
        v = views.get(d)
        return v if v is not None and v.version is not None else None

    def divergent(d: str) -> bool:
        v = view(d)
        return v is not None and (v.version > held or (v.version == held and held > 0 and v.digest != last.digest))

    def behind(d: str) -> bool:
        v = view(d)
        return v is not None and (v.version < held or (v.wants_snapshot and v.version != held))

    def snapshot(version: int, only: list[str] | None) -> dict[str, Any]:
        return new_update(site=site, version=version, base=SNAPSHOT, ops=gallery.upserts(), digest=gallery.digest,
                          devices=only, lifetime_s=lifetime_s, now=now, match=match if version == new_version else None)

    if force_snapshot or any(divergent(d) for d in devices):
        claims = snapshot(new_version, None)
        why = "snapshot asked for" if force_snapshot else "a device holds a gallery the ledger cannot explain"
        return Plan([Send(claims, list(devices))], (new_version, SNAPSHOT, claims["update_id"]), why)
    if changed or gone or (match is not None and held):
        ops = gallery.upserts(changed) + [erase_op(r) for r in gone]
        delta = new_update(site=site, version=new_version, base=held, ops=ops, digest=gallery.digest,
                           lifetime_s=lifetime_s, now=now, match=match)
        sends = [Send(delta, list(devices))]
        sends += [Send(snapshot(new_version, [d]), [d], d) for d in devices if behind(d)]
        why = f"{len(changed)} resident(s) changed, {len(gone)} erased"
        if match is not None:
            why += f"; match target {match['fpir_target']:g}"
        return Plan(sends, (new_version, "delta", delta["update_id"]), why)
    late = [d for d in devices if behind(d)]
    if late and held:
        return Plan([Send(snapshot(held, [d]), [d], d) for d in late], None, "devices behind the site's version")
    return Plan([], None, f"nothing to publish: the site holds version {held}")


def frames_for(send: Send, admin: PartyKeys, device_keys: dict[str, PartyKeys], max_message_bytes: int) -> list[bytes]:
    """The MQTT payloads of one send: sealed to its recipients, framed behind the head the admin signs."""
    recipients = [device_keys[d].encryption for d in send.recipients]
    return to_frames(seal_update(send.claims, admin, recipients), send.claims, admin, max_message_bytes)


# -- the admin's MQTT link ---------------------------------------------------------------


class AdminLink:
    """One MQTT connection for the admin tools: publish (waiting for PUBACKs), and read acks and statuses.

    paho's network thread only files what arrives under a lock; acks are
    verified (device signatures) by the caller's thread in :meth:`views`.
    """

    def __init__(self, settings: MqttSettings, tls: TlsFiles | None, *, site: str, devices: KeyRing,
                 client_id: str | None = None):
        import os

        self.settings = settings
        self.site = site
        self.devices = devices
        self.prefix = settings.topic_prefix
        self._client = new_client(settings, client_id or f"kiosk-admin-gallery-{os.getpid()}", tls)
        self._cond = threading.Condition()
        self._connack: int | None = None
        self._acks: dict[int, int] = {}
        self._raw: dict[str, dict[str, Any]] = {}  # device -> {"ack": bytes, "status": bytes}
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: None

    def site_topic(self) -> str:
        return f"{self.prefix}/{self.site}/gallery"

    def device_topic(self, device: str) -> str:
        return f"{self.prefix}/{self.site}/{device}/gallery"

    def connect(self, timeout: float | None = None) -> "AdminLink":
        timeout = timeout or self.settings.connect_timeout
        try:
            self._client.connect(self.settings.host, self.settings.port, self.settings.keepalive)
        except (OSError, ValueError) as e:
            raise BrokerUnavailable(f"cannot connect to {self.settings.url}: {e}") from e
        self._client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None, timeout)
        if self._connack != 0:
            self.close()
            raise BrokerUnavailable(f"{self.settings.url} did not accept this client (CONNACK {self._connack})")
        base = f"{self.prefix}/{self.site}/+"
        self._client.subscribe([(f"{base}/ack", 1), (f"{base}/status", 1)])
        return self

    def close(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    def __enter__(self) -> "AdminLink":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    # paho's network thread
    def _on_connect(self, c, u, flags, rc, props) -> None:
        with self._cond:
            self._connack = reason_value(rc)
            self._cond.notify_all()

    def _on_publish(self, c, u, mid, rc, props) -> None:
        with self._cond:
            self._acks[mid] = reason_value(rc)
            self._cond.notify_all()

    def _on_message(self, c, u, msg) -> None:
        parts = topic_of(msg).split("/")
        if len(parts) < 3 or parts[-1] not in ("ack", "status"):
            return
        with self._cond:
            self._raw.setdefault(parts[-2], {})[parts[-1]] = msg.payload
            self._cond.notify_all()

    # the caller's thread
    def publish(self, topic: str, frames: list[bytes], timeout: float = 30.0) -> None:
        """Publish ``frames`` QoS 1 in order; raise BrokerUnavailable unless the broker took every one."""
        mids = []
        for frame in frames:
            info = self._client.publish(topic, frame, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
            mids.append(info.mid)
        with self._cond:
            done = self._cond.wait_for(lambda: all(m in self._acks for m in mids), timeout)
            codes = [self._acks.get(m) for m in mids]
        if not done:
            raise BrokerUnavailable(f"the broker did not acknowledge every part on {topic} within {timeout:g}s")
        bad = [c for c in codes if c is not None and c >= FAILURE]
        if bad:
            raise BrokerUnavailable(f"the broker refused the update on {topic} (reason code {bad[0]:#x}); "
                                    "is this client allowed to write gallery topics?")

    def views(self) -> dict[str, DeviceView]:
        """Each device's latest verified ack (and online/offline from its status), as seen so far."""
        with self._cond:
            raw = {d: dict(v) for d, v in self._raw.items()}
        out = {}
        for device, got in raw.items():
            v = DeviceView(device)
            if "status" in got:
                try:
                    status = json.loads(got["status"])
                    if isinstance(status, dict):
                        v.take_status(status)
                except (ValueError, RecursionError):
                    pass
            if "ack" in got:
                try:
                    claims = verify_ack(got["ack"], self.devices)
                    if claims.get("site") == self.site and claims.get("device") == device:
                        v.take_ack(claims)
                    else:
                        v.ack_error = "the retained ack names another device"
                except (EnvelopeError, ValueError) as e:
                    v.ack_error = (f"the retained ack does not verify ({str(e)[:80]}): "
                                   "is another client writing its topic?")
                except Exception as e:  # noqa: BLE001 - one door's ack must not stop the plan for every door
                    v.ack_error = f"the retained ack could not be read ({type(e).__name__})"
            out[device] = v
        return out

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Each device's latest retained status as it came (unsigned: for display only), by device."""
        with self._cond:
            raw = {d: v["status"] for d, v in self._raw.items() if "status" in v}
        out = {}
        for device, payload in raw.items():
            try:
                status = json.loads(payload)
            except (ValueError, RecursionError):
                continue
            if isinstance(status, dict):
                out[device] = status
        return out

    def wait(self, predicate, timeout: float) -> bool:
        """Wait until ``predicate(views)`` holds, re-checking as messages arrive."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.views()):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._cond:
                self._cond.wait(min(left, 0.2))

