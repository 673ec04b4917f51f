"""The device's side of gallery updates: subscribe, verify, apply, swap, acknowledge.

It shares the publisher's MQTT connection (one connection per device):
:meth:`Publisher.subscribe` delivers ``PREFIX/SITE/gallery`` and
``PREFIX/SITE/DEVICE/gallery`` messages on paho's network thread, where
they are only put on a bounded queue. This stage's own thread ("gallery")
takes them from there, puts parts back together, decrypts and verifies
(:class:`~kiosk.sync.updates.receive.UpdateReceiver`), applies the update in one
transaction (:func:`~kiosk.sync.updates.apply.apply_update`) on its own
database connection, swaps the recogniser's gallery in one step while
recognition runs, and answers on ``PREFIX/SITE/DEVICE/ack`` (retained, signed
with the device key, never holding a name, template or resident id).

A version gap (or a gallery that would not hash to the admin's digest)
sets ``wants_snapshot`` in the retained status, published at once. At
start the device says what it holds in a signed ack (``"result":
"holding"``): the admin's plan rests on signed acks alone.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...config import KioskConfig
from ...errors import UpdateRejected
from ...gallery.erasure import reclaim
from ...gallery.store import GalleryStore, open_store
from .. import keys as keymod
from ..keys import KeyRing, PartyKeys
from .apply import apply_update, held_version, was_applied
from .format import UpdateHead, ack_claims, check_fresh, check_target, reject, sign_ack
from .receive import UpdateReceiver

log = logging.getLogger(__name__)

#: Reasons after which the device asks for a snapshot.
WANTS_SNAPSHOT = frozenset({"version_gap", "base_mismatch", "digest_mismatch"})
#: Refusals of messages no admin vouched for (no verified head: junk, forgeries, stray
#: parts) are answered and logged at most this many at once, then this many a second;
#: the rest are only counted (``unanswered`` in the status), so that a flood on the
#: gallery topic costs the device no signature, no message and no journal line each.
ANSWER_BURST, ANSWER_RATE = 20, 1.0
#: Seconds the old gallery is kept intact after a swap, at most, before its
#: templates are overwritten (the frame in progress may still search it).
SCRUB_WAIT_S = 5.0
#: Seconds between tries to reclaim an erasure's pages after a try failed (the card full or failing, busy).
RECLAIM_RETRY_S = 30.0

_STOP = object()


class _Reload:
    """A reload of the gallery from the database, queued to the gallery thread; ``done`` once swapped in."""

    def __init__(self):
        self.done = threading.Event()


def head_screen(site: str, device: str, limits, *, held: Callable[[], int], applied: Callable[[str], bool],
                wall_clock: Callable[[], float] = time.time) -> Callable[[UpdateHead], None]:
    """The device's checks on an update's signed head, before any of its parts is kept.

    The same checks as on the update itself: for this site and device, in
    date, and above the version held (a replay or rollback is refused on
    its head, its parts never kept).
    """

    def screen(head: UpdateHead) -> None:
        check_target(head, site=site, device=device, now=wall_clock(), skew=limits.clock_skew_s)
        check_fresh(head, held(), applied)

    return screen


def gallery_topics(prefix: str, site: str, device: str) -> tuple[str, str, str]:
    """(site topic, device topic, ack topic)."""
    return f"{prefix}/{site}/gallery", f"{prefix}/{site}/{device}/gallery", f"{prefix}/{site}/{device}/ack"


class GallerySync:
    """Takes gallery updates for one device.

    :param store: a :class:`GalleryStore` on its own database connection.
    :param recognizer: what searches the gallery: ``swap_gallery(g)``,
        ``gallery`` and ``stats.frames`` (to know when the old gallery is unused).
    :param link: the publisher (``subscribe``, ``send``, ``request_status``).
    :param device_keys: this device's private keys (decrypt updates, sign acks).
    :param admins: the admins' public keys, pinned.
    """

    def __init__(self, store: GalleryStore, recognizer, link, device_keys: PartyKeys, admins: KeyRing, config: KioskConfig,
                 *, wall_clock: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic,
                 queue_size: int | None = None):
        self.store = store
        self.recognizer = recognizer
        self.link = link
        self.device_keys = device_keys
        self.site = config.device.site
        self.device = config.device.device_id
        self.limits = config.gallery
        self._match = config.match  # the device's own target (a reload's, where the recogniser holds one)
        self.receiver = UpdateReceiver(
            device_keys, admins, self.limits, clock=clock,
            screen=head_screen(self.site, self.device, self.limits, held=lambda: self.version,
                               applied=lambda u: was_applied(store, u), wall_clock=wall_clock))
        self.site_topic, self.device_topic, self.ack_topic = gallery_topics(config.mqtt.topic_prefix, self.site, self.device)
        self._wall = wall_clock
        self._clock = clock
        self._budget, self._budget_at = float(ANSWER_BURST), clock()
        self._quiet_since, self._quiet_logged = 0, clock()
        # Room for the parts of one update of the largest size (their bytes, at most that again).
        size = queue_size or max(16, self.limits.max_update_bytes // self.limits.max_message_bytes + 8)
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._retired: list[tuple[Any, int | None, float]] = []  # (gallery, frame count, deadline)
        # Read by other threads (status): plain values replaced whole.
        self.version = held_version(store)
        self.digest = recognizer.gallery.digest()
        self.wants_snapshot = False
        self.snapshot_reason: str | None = None
        self.last: dict[str, Any] | None = None
        self.applied = 0
        self._reclaim_due: float | None = None  # when to try reclaiming erased pages again (None: nothing waits)
        self.refused = 0
        self.dropped = 0
        self.unanswered = 0

    @classmethod
    def from_config(cls, config: KioskConfig, recognizer, link, **kwargs) -> "GallerySync | None":
        """Built from the config, on its own database connection; None when updates are off.

        Raises :class:`~kiosk.errors.KeyFileError` for an admin key file that
        is malformed or a device key that is missing or unsafe; an absent
        admin key file turns updates off (logged, and shown in the status).
        """
        if not (config.gallery.enabled and config.mqtt.enabled):
            return None
        base = config.device.state_dir
        admin_path = keymod.resolve(config.keys.admin_public_key, base)
        if not Path(admin_path).is_file():
            log.warning("gallery updates off: no admin public key at %s (keys.admin_public_key)", admin_path)
            return None
        admins = KeyRing.from_files([admin_path])
        device, _backend = keymod.load_device_keys(config)
        store = open_store(config)
        try:
            return cls(store, recognizer, link, device, admins, config, **kwargs)
        except BaseException:
            store.db.close()
            raise

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("gallery sync is closed")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gallery", daemon=True)
        self._thread.start()
        self.link.subscribe([self.site_topic, self.device_topic], self._on_message)
        self._ack("holding", None, None, None, None)  # what it holds, signed: the admin's plan reads it
        log.info("taking gallery updates on %s and %s (version %d)", self.site_topic, self.device_topic, self.version)

    def stop(self, timeout: float = 10.0) -> bool:
        t = self._thread
        if t is None:
            return True
        self._put(_STOP, block=True)
        t.join(timeout)
        if t.is_alive():
            log.warning("gallery sync did not stop within %.1fs", timeout)
            return False
        self._thread = None
        return True

    def close(self) -> None:
        """Stop and close the database connection; safe to call twice."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        self.store.db.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        """The ``gallery`` part of the retained device status (no personal data)."""
        return {
            "updates": "on", "version": self.version, "digest": self.digest, "wants_snapshot": self.wants_snapshot,
            "snapshot_reason": self.snapshot_reason, "applied": self.applied, "refused": self.refused,
            "dropped": self.dropped, "stray_parts": self.receiver.stray, "unanswered": self.unanswered,
            "last": self.last,
        }

    # -- paho's network thread ------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        self._put((topic, payload))

    def _put(self, item, block: bool = False) -> None:
        try:
            self._queue.put(item, block=block, timeout=5.0 if block else None)
        except queue.Full:
            self.dropped += 1  # its update will be refused as parts_missing, or never acked

    # -- the gallery thread ---------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.05 if self._retired else 1.0)
            except queue.Empty:
                item = None
            if item is _STOP:
                self.scrub_retired(force=True)
                return
            try:
                if isinstance(item, _Reload):
                    try:
                        self._reload_gallery()
                    finally:
                        item.done.set()
                elif item is not None:
                    self.handle(item[1])
                for e in self.receiver.expire():
                    self._refuse(e, getattr(e, "head", None))
                self.scrub_retired()
                self.reclaim_pending()
            except Exception:  # never let one message end the stage
                log.exception("gallery update handling failed")

    def reload(self, timeout: float = 30.0) -> bool:
        """Load the gallery from the database again and swap it in (SIGHUP), on the gallery thread: after any
        update in hand, never between an update's swap and its ack. Whether it was done within ``timeout``."""
        if not self.alive:
            return False
        item = _Reload()
        self._put(item, block=True)
        return item.done.wait(timeout)

    def _reload_gallery(self) -> None:
        old, new = self.recognizer.gallery, self.store.load()
        self.recognizer.swap_gallery(new)
        self.version, self.digest = held_version(self.store), new.digest()
        self._retire(old, new)

    def _retire(self, old, new) -> None:
        """The gallery swapped out: overwritten once no frame can be searching it (:meth:`scrub_retired`)."""
        if old is not new and hasattr(old, "matrix"):
            self._retired.append((old, getattr(getattr(self.recognizer, "stats", None), "frames", None),
                                  time.monotonic() + SCRUB_WAIT_S))

    def handle(self, payload: bytes) -> dict[str, Any] | None:
        """Take one message (gallery thread, or a test's); the ack sent, or None while parts are missing."""
        try:
            received = self.receiver.offer(payload)
        except UpdateRejected as e:
            if getattr(e, "quiet", False):  # a stray part: counted, not answered
                log.debug("gallery part dropped: %s", e)
                return None
            return self._refuse(e, getattr(e, "head", None))
        if received is None:
            return None
        update = received.update
        try:
            applied = apply_update(self.store, update, site=self.site, device=self.device, now=self._wall(),
                                   skew=self.limits.clock_skew_s, current=self.recognizer.gallery,
                                   own_target=self._own_target())
        except UpdateRejected as e:
            e.sha256 = received.message_sha256
            return self._refuse(e, update)
        except Exception as e:  # noqa: BLE001 - a fault of the device's own, answered rather than left silent
            # apply_update rolls back what it began, and what can fail after its COMMIT it catches itself: nothing
            # of this update is held, so the admin is told it was refused (and may send it again).
            # Its type only: an exception's text may quote what it failed on (a resident's id).
            log.error("gallery update %s failed while being applied (%s); nothing applied", update.update_id,
                      type(e).__name__)
            log.debug("the failure", exc_info=True)
            refusal = reject("internal", f"{type(e).__name__} while applying")
            refusal.sha256 = received.message_sha256
            return self._refuse(refusal, update)
        old = self.recognizer.gallery
        self.recognizer.swap_gallery(applied.gallery)  # one step; recognition keeps running
        self.version, self.digest = applied.version, applied.digest
        self.applied += 1
        self.wants_snapshot, self.snapshot_reason = False, None
        log.info(
            "gallery %s version %d applied in %.2fs (%.2fs in the transaction) by %s: %d upserted, %d erased"
            " (%d check-ins purged), %d residents",
            update.kind, applied.version, applied.seconds, applied.locked_s, received.signer_kid, applied.upserted,
            applied.erased,
            applied.checkins_purged, len(applied.gallery),
        )
        if not applied.reclaimed:
            log.warning("erased pages are not all reclaimed yet; tried again in %.0f s", RECLAIM_RETRY_S)
            self._reclaim_due = self._clock() + RECLAIM_RETRY_S
        ack = self._ack("applied", update, None, None, received.message_sha256)
        self.last["apply_s"] = round(applied.seconds, 3)
        self.last["locked_s"] = round(applied.locked_s, 3)
        # The retained status says which gallery the door holds: published now, not at the next interval,
        # so that a console shows the new version as soon as the ack (and a snapshot request is cleared).
        self.link.request_status()
        self._retire(old, applied.gallery)
        return ack

    def _own_target(self) -> float:
        """The device's configured match.fpir_target, as running (SIGHUP may have changed it)."""
        config = getattr(self.recognizer, "config", None)
        return (config.match if config is not None else self._match).fpir_target

    def _refuse(self, e: UpdateRejected, update) -> dict[str, Any] | None:
        self.refused += 1
        if update is None and not self._may_answer():
            self.unanswered += 1
            return None
        log.warning("gallery update refused: %s", e)
        if e.reason in WANTS_SNAPSHOT:
            self.wants_snapshot, self.snapshot_reason = True, e.reason
            self.link.request_status()
        return self._ack("refused", update, e.reason, str(e), getattr(e, "sha256", None))

    def _may_answer(self) -> bool:
        """A token for answering a message nobody vouched for (see ANSWER_BURST)."""
        now = self._clock()
        self._budget = min(float(ANSWER_BURST), self._budget + (now - self._budget_at) * ANSWER_RATE)
        self._budget_at = now
        if self._budget >= 1.0:
            self._budget -= 1.0
            return True
        if now - self._quiet_logged >= 60.0:
            log.warning("gallery: %d unsigned messages refused without an answer since the last report "
                        "(a flood on the gallery topic?)", self.unanswered + 1 - self._quiet_since)
            self._quiet_since, self._quiet_logged = self.unanswered + 1, now
        return False

    def _ack(self, result: str, update, reason, detail, sha) -> dict[str, Any]:
        claims = ack_claims(site=self.site, device=self.device, result=result, version=self.version,
                            digest=self.digest, now=self._wall(), update=update, reason=reason, detail=detail,
                            message_sha256=sha)
        if result != "holding":
            self.last = {k: claims[k] for k in ("result", "reason", "update_id", "offered_version", "time")}
        self.link.send(self.ack_topic, sign_ack(claims, self.device_keys), qos=1, retain=True)
        return claims

    def reclaim_pending(self) -> bool | None:
        """Reclaim the pages of an erasure whose reclaiming failed (gallery thread), when it is due; whether it
        worked (None: nothing due)."""
        if self._reclaim_due is None or self._clock() < self._reclaim_due:
            return None
        try:
            done = reclaim(self.store.db)
        except sqlite3.Error as e:
            log.warning("erased pages still not reclaimed (%s)", type(e).__name__)
            done = False
        self._reclaim_due = None if done else self._clock() + RECLAIM_RETRY_S
        if done:
            log.info("erased pages reclaimed")
        return done

    def scrub_retired(self, force: bool = False) -> int:
        """Overwrite the templates of galleries swapped out, once no frame can be searching them.

        The frame in progress at the swap finishes on the old gallery; two
        frames begun since (or ``SCRUB_WAIT_S``) mean it has. Returns how
        many were overwritten.
        """
        frames = getattr(getattr(self.recognizer, "stats", None), "frames", None)
        now = time.monotonic()
        done, keep = 0, []
        for old, at, deadline in self._retired:
            if force or at is None or frames is None or frames >= at + 2 or now >= deadline:
                old.scrub()  # templates and the means derived from them
                done += 1
            else:
                keep.append((old, at, deadline))
        self._retired = keep
        return done
