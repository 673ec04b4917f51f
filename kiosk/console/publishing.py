"""The console's gallery publisher: one MQTT connection that publishes what changed and hears the doors.

A change (enrolment, new name or dates, erasure) is committed to the admin's
enrollment database first; then :meth:`GalleryPublisher.publish_now` asks
this thread to publish it, exactly as ``kiosk-admin gallery publish`` does
(:func:`~kiosk.sync.updates.admin.plan`, signed with the admin's key,
sealed to each door's key). A change made while the broker is away is not
lost: every round compares the database with the ledger and publishes what
the site does not hold yet. Each round also files every door's retained
status and newest verified ack in the back-end store (``console_doors``),
which the doors' pages read.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from ..backend.store import Store
from ..config import MqttSettings
from ..errors import KeyFileError, KioskError
from ..sync import keys as keymod
from ..sync.mqtt import TlsFiles
from ..sync.updates.admin import AdminGallery, AdminLink, Ledger, frames_for, plan
from .doors import shown
from .residents import Residents

log = logging.getLogger(__name__)


def site_devices(path: Path, site: str) -> dict[str, keymod.PartyKeys]:
    """The site's doors' public keys: ``*.pub.jwks`` in a folder (or one file), by device id."""
    files = sorted(path.glob("*.pub.jwks")) if path.is_dir() else [path] if path.exists() else []
    out: dict[str, keymod.PartyKeys] = {}
    for f in files:
        for party in keymod.load_public(f):
            dsite, _, device = party.owner.partition("/")
            if dsite != site or not device:
                continue
            if device in out and out[device].signing_kid != party.signing_kid:
                raise KeyFileError(f"{f}: a second, different key for {party.owner}: remove the one not in use")
            out[device] = party
    return out


#: How long a round waits for the doors' statuses after their acks (a door that is slow to say so is filed as is).
STATUS_WAIT_S = 3.0


def _statuses_caught_up(views, statuses, devices) -> bool:
    """Each of ``devices`` that acknowledged a version has a status sent with that version (or a later one)."""
    for d in devices:
        v = views.get(d)
        acked = v.ack.get("version") if v is not None and v.ack else None
        said = (statuses.get(d) or {}).get("gallery")
        said = said.get("version") if isinstance(said, dict) else None
        if isinstance(acked, int) and not (isinstance(said, int) and said >= acked):
            return False
    return True


class GalleryPublisher:
    """Publishes the admin's database to the site's doors and files what the doors say (see the module docstring)."""

    def __init__(self, residents: Residents, store: Store, settings: MqttSettings, tls: TlsFiles | None, *,
                 site: str, admin_key: keymod.PartyKeys, devices_path: Path, client_id: str,
                 valid_hours: float = 168.0, max_message_bytes: int = 262144, interval_s: float = 30.0):
        self.residents = residents
        self.store = store
        self.settings = settings
        self.tls = tls
        self.site = site
        self.admin_key = admin_key
        self.devices_path = devices_path
        self.client_id = client_id
        self.lifetime_s = valid_hours * 3600
        self.max_message_bytes = max_message_bytes
        self.interval_s = interval_s
        self.last_error: str | None = None
        self.last_round: float | None = None
        self.last_version: int | None = None
        self._link: AdminLink | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._asked = 0
        self._done = 0
        self._thread = threading.Thread(target=self._run, name="console-publisher", daemon=True)

    def start(self) -> "GalleryPublisher":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._link is not None:
            self._link.close()
            self._link = None

    def publish_now(self, timeout: float = 20.0) -> bool:
        """Ask for a round now and wait for it; True when it ran without an error."""
        with self._cond:
            self._asked += 1
            mine = self._asked
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._done >= mine or self._stop.is_set(), timeout)
            return self._done >= mine and self.last_error is None

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                asked = self._asked
            try:
                self._round()
                self.last_error = None
            except KioskError as e:
                self.last_error = str(e)
                log.warning("gallery publishing: %s; trying again", e)
                if self._link is not None:
                    self._link.close()
                    self._link = None
            except Exception as e:  # noqa: BLE001 - the thread must outlive one bad round, and says so
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("gallery publishing failed; trying again")
            self.last_round = time.time()
            with self._cond:
                self._done = asked
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._asked > asked or self._stop.is_set(),
                                    self.interval_s if self.last_error is None else min(5.0, self.interval_s))

    def _connect(self, devices) -> AdminLink:
        if self._link is None:
            link = AdminLink(self.settings, self.tls, site=self.site, devices=keymod.KeyRing(devices.values()),
                             client_id=self.client_id)
            link.connect()
            self._link = link
            link.wait(lambda views: all(d in views for d in devices), 2.0)  # the retained acks and statuses
        else:
            self._link.devices = keymod.KeyRing(devices.values())
        return self._link

    def _round(self) -> None:
        devices = site_devices(self.devices_path, self.site)
        link = self._connect(devices)
        with self.residents.lock:
            gallery = AdminGallery.read(self.residents.gallery)
            ledger = Ledger(self.residents.gallery, self.site)
            known = ledger.known(link.views(), sorted(devices))
            p = plan(gallery, ledger, sorted(devices), known, lifetime_s=self.lifetime_s)
        expect: dict[str, str] = {}
        for send in p.sends:
            frames = frames_for(send, self.admin_key, devices, self.max_message_bytes)
            topic = link.device_topic(send.device) if send.device else link.site_topic()
            link.publish(topic, frames)
            if p.record and send.claims["update_id"] == p.record[2]:
                with self.residents.lock:
                    ledger.record(*p.record, gallery)
                self.last_version = p.record[0]
                log.info("gallery version %d published to site %s (%s)", p.record[0], self.site, p.why)
            for d in send.recipients:
                expect[d] = send.claims["update_id"]
        if expect:
            link.wait(lambda views: all(d in views and views[d].ack and views[d].ack.get("update_id") == u
                                        for d, u in expect.items()), 10.0)
            # A door publishes its status right after applying: waited for a moment, so that the doors page
            # shows the size and target of the gallery it acknowledged, not the one before.
            link.wait(lambda views: _statuses_caught_up(views, link.statuses(), expect), STATUS_WAIT_S)
        with self.residents.lock:
            known = ledger.known(link.views(), sorted(devices))
        self._file(known, link.statuses())

    def _file(self, views, statuses) -> None:
        now = time.time()
        q = self.store.q
        with self.store.transaction() as cur:
            for device in sorted(set(views) | set(statuses)):
                v = views.get(device)
                ack = json.dumps(v.ack, sort_keys=True) if v is not None and v.ack else None
                status = json.dumps(shown(statuses[device]), sort_keys=True) if device in statuses else None
                cur.execute(q("SELECT status, ack FROM console_doors WHERE site = ? AND device = ?"), [self.site, device])
                before = cur.fetchone()
                if before is not None:  # what was heard before stays until something newer comes
                    status, ack = status or before[0], ack or before[1]
                cur.execute(q("DELETE FROM console_doors WHERE site = ? AND device = ?"), [self.site, device])
                cur.execute(q("INSERT INTO console_doors (site, device, status, ack, heard_at) VALUES (?, ?, ?, ?, ?)"),
                            [self.site, device, status, ack, now])
