"""The reference consumer: what a back end does with the devices' events.

It subscribes to ``PREFIX/+/+/events`` (optionally as an MQTT v5 shared
subscription, ``$share/GROUP/…``, so that several consumers split a fleet's
load), decrypts each envelope with the back end's key, verifies it against
the devices' public keys, checks that the signer, the claims and the topic
all name the same device, and drops duplicates by (site, device, event id).
A message that fails any check is reported as :class:`Invalid`, never as an
event. What is odd about a genuine event (its sequence goes back, its time
is far from the receive time) is flagged (:mod:`.freshness`).

paho's network thread only queues what arrives; the consumer's own thread
("consumer") takes what has arrived as a batch, checks each message, hands
the batch to its :class:`Sink`, and only then acknowledges the batch's
messages to the broker (manual PUBACK). A sink that fails is retried with
backoff, and nothing is acknowledged meanwhile, so an event is not lost if
the consumer or its store dies half-way. ``kiosk-admin events`` prints
through :class:`PrintSink`; ``kiosk-ingest`` stores through its own sink,
on the same code path.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import sqlite_utils
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlite_utils.migrations import Migrations

from ..config import MqttSettings
from ..errors import BrokerUnavailable, EnvelopeError, KioskError
from ..sync.envelope import EVENT_TYP, open_sealed
from ..sync.keys import KeyRing, PartyKeys
from ..sync.mqtt import FAILURE, TlsFiles, loop_running, new_client, parse_event_topic, reason_value, topic_of
from ..sync.events.format import check_claims, printable
from .freshness import FreshnessRules, flags_for

log = logging.getLogger(__name__)

#: The largest message the back end takes (MQTT v5 Maximum Packet Size, asked of the broker at connect). A sealed
#: event is under 70 kB (joserfc refuses a larger ciphertext, even with an evidence crop); the rest is margin.
MAX_PACKET_BYTES = 262_144
#: Messages taken as one batch at most, and how long a batch waits to fill.
BATCH_MAX = 500
BATCH_WAIT = 0.02


@dataclass(frozen=True)
class Event:
    """A verified, decrypted event."""

    claims: dict[str, Any]
    topic: str
    signer: str
    received_at: float = 0.0
    #: What is odd about it (see :mod:`.freshness`); set by the sink that remembers the door.
    flags: tuple[str, ...] = ()
    #: The message as received (its size and SHA-256), so that a refusal made later still names it.
    payload_bytes: int = 0
    payload_sha256: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """(site, device, event id): what makes an event the same event."""
        return self.claims["site"], self.claims["device"], self.claims["event_id"]


@dataclass(frozen=True)
class Invalid:
    """A message on an events topic that failed verification (never its plaintext)."""

    topic: str
    reason: str
    detail: str
    received_at: float = 0.0
    payload_bytes: int = 0
    payload_sha256: str = ""


class Sink(Protocol):
    """Where a batch of checked messages goes; the batch is acknowledged once :meth:`take` returns.

    Raising leaves the whole batch unacknowledged. A sink may also have
    ``transient(error) -> bool``: a transient failure (a store that cannot be
    reached) is retried with backoff; any other is taken to be the fault of
    some message in the batch, which the consumer then splits until that
    message is alone, and records it as refused (reason ``unstorable``).
    A sink without ``transient`` has every failure retried.
    """

    def take(self, events: Sequence[Event], invalid: Sequence[Invalid]) -> None: ...


_seen_migrations = Migrations("kiosk-consumer-seen")


@_seen_migrations(name="0001_seen_by_device")
def _m0001(db: sqlite_utils.Database) -> None:
    # Event ids are unique per device only: the key is (site, device, event id).
    db.execute(
        "CREATE TABLE seen_events (site TEXT NOT NULL, device TEXT NOT NULL, event_id TEXT NOT NULL,"
        " received_at REAL NOT NULL, PRIMARY KEY (site, device, event_id))"
    )
    db.execute("CREATE INDEX seen_events_by_age ON seen_events (received_at)")
    # The highest sequence number seen per door: a sequence that goes back is flagged.
    db.execute(
        "CREATE TABLE seen_devices (site TEXT NOT NULL, device TEXT NOT NULL, last_seq INTEGER NOT NULL,"
        " PRIMARY KEY (site, device))"
    )


class SeenIds:
    """Events already handed on, keyed on (site, device, event id), and each door's highest sequence number.

    In a SQLite file (``path``) they survive restarts; with no path they
    live in memory. :meth:`prune` forgets events older than ``keep_days``
    (a replay older than that is still flagged, by its sequence and time).
    """

    def __init__(self, path: Path | str | None = None, *, keep_days: float = 30.0):
        import sqlite3

        self.path = Path(path) if path else None
        self.keep_days = keep_days
        if self.path is not None:
            from ..privatefile import private_database

            private_database(self.path)  # 0600 before SQLite opens it; its -wal and -shm follow
        conn = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        self._db = sqlite_utils.Database(conn)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Losing the last few on a power cut costs only printing them again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        _seen_migrations.apply(self._db)
        self._lock = threading.Lock()

    def add(self, key: tuple[str, str, str], seq: int | None = None, received_at: float | None = None) -> bool:
        """Record one event; True if it was new."""
        return self.add_many([(key, seq, received_at)]) == [True]

    def add_many(self, items: Sequence[tuple[tuple[str, str, str], int | None, float | None]]) -> list[bool]:
        """Record events in one transaction; for each, True if it was new."""
        out = []
        now = time.time()
        with self._lock, self._db.atomic():
            for (site, device, event_id), seq, at in items:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO seen_events (site, device, event_id, received_at) VALUES (?, ?, ?, ?)",
                    [site, device, event_id, now if at is None else at],
                )
                out.append(cur.rowcount == 1)
                if seq is not None:
                    self._db.execute(
                        "INSERT INTO seen_devices (site, device, last_seq) VALUES (?, ?, ?) ON CONFLICT (site, device)"
                        " DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                        [site, device, seq],
                    )
        return out

    def last_seq(self, site: str, device: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT last_seq FROM seen_devices WHERE site = ? AND device = ?", [site, device]
            ).fetchone()
        return row[0] if row else None

    def prune(self, older_than_days: float | None = None, *, now: float | None = None) -> int:
        """Forget events received more than ``older_than_days`` (default ``keep_days``) ago."""
        days = self.keep_days if older_than_days is None else older_than_days
        cutoff = (time.time() if now is None else now) - days * 86400
        with self._lock, self._db.atomic():
            return self._db.execute("DELETE FROM seen_events WHERE received_at < ?", [cutoff]).rowcount

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        with self._lock:
            return self._db.execute(
                "SELECT 1 FROM seen_events WHERE site = ? AND device = ? AND event_id = ?", list(key)
            ).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM seen_events").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.conn.close()


@dataclass
class PrintSink:
    """The reference consumer's sink: drop events already seen, flag, hand each new one on.

    ``on_event`` runs first and the event is remembered after it, so a
    failing ``on_event`` loses nothing (the batch is taken again).
    """

    on_event: Callable[[Event], None]
    on_invalid: Callable[[Invalid], None] = lambda inv: None
    seen: SeenIds = field(default_factory=SeenIds)
    rules: FreshnessRules = FreshnessRules()
    duplicates: int = 0
    flagged: int = 0
    _prune_at: float = 0.0

    def take(self, events: Sequence[Event], invalid: Sequence[Invalid]) -> None:
        for inv in invalid:
            self.on_invalid(inv)
        new: list[tuple[tuple[str, str, str], int, float]] = []
        keys: set[tuple[str, str, str]] = set()
        last: dict[tuple[str, str], int | None] = {}
        for ev in events:
            if ev.key in keys or ev.key in self.seen:
                self.duplicates += 1
                continue
            c = ev.claims
            door = (c["site"], c["device"])
            if door not in last:
                last[door] = self.seen.last_seq(*door)
            flags = flags_for(c, ev.received_at, last[door], self.rules)
            if flags:
                self.flagged += 1
                ev = Event(claims=c, topic=ev.topic, signer=ev.signer, received_at=ev.received_at, flags=flags)
            self.on_event(ev)
            keys.add(ev.key)
            new.append((ev.key, c["seq"], ev.received_at))
            last[door] = c["seq"] if last[door] is None else max(last[door], c["seq"])
        # Remembered after they were handed on, in one transaction per batch.
        self.seen.add_many(new)
        if time.monotonic() >= self._prune_at:
            self._prune_at = time.monotonic() + 3600
            self.seen.prune()


def verify_event(topic: str, payload: bytes, backend: PartyKeys, devices: KeyRing, prefix: str,
                 received_at: float | None = None) -> Event:
    """Open and check one message; raises :class:`EnvelopeError` (with ``reason``)."""
    where = parse_event_topic(topic, prefix)
    if where is None:
        raise _bad("topic_mismatch", f"not an events topic under {prefix!r}")
    opened = open_sealed(payload, backend, devices, typ=EVENT_TYP)
    # A door's key can be stolen: what it signed is genuine, not necessarily sane.
    claims = check_claims(opened.claims)
    said = f"{claims['site']}/{claims['device']}"
    if said != opened.signer:
        raise _bad("claims_mismatch", f"event claims to be from {said} but is signed by {opened.signer}")
    if (claims["site"], claims["device"]) != where:
        raise _bad("topic_mismatch", f"event from {said} arrived on {topic}")
    return Event(claims=claims, topic=topic, signer=opened.signer,
                 received_at=time.time() if received_at is None else received_at)


def check_message(topic: str, payload: bytes, backend: PartyKeys, devices: KeyRing, prefix: str,
                  received_at: float | None = None) -> Event | Invalid:
    """:func:`verify_event`, with a refusal returned as :class:`Invalid` (size and hash, no plaintext).

    Never raises: whatever a message holds, it ends as an :class:`Event` or
    an :class:`Invalid` whose reason and detail are printable text.
    """
    at = time.time() if received_at is None else received_at
    data = bytes(payload)
    digest = hashlib.sha256(data).hexdigest()
    try:
        event = verify_event(topic, data, backend, devices, prefix, at)
    except EnvelopeError as e:
        reason, detail = getattr(e, "reason", "invalid"), str(e)
    except Exception as e:  # noqa: BLE001 - no message may stop the consumer (a bug in a JOSE library included)
        reason, detail = "unreadable", f"{type(e).__name__} while verifying"
        log.warning("a message on an events topic could not be verified (%s); refused", type(e).__name__)
    else:
        return replace(event, payload_bytes=len(data), payload_sha256=digest)
    return Invalid(topic=printable(topic, 200), reason=printable(reason, 40), detail=printable(detail),
                   received_at=at, payload_bytes=len(data), payload_sha256=digest)


def retry_until_stopped(stop: threading.Event, fn: Callable, *args, errors: tuple[type[BaseException], ...] = (Exception,),
                        first: float = 0.2, ceiling: float = 30.0,
                        on_fail: Callable[[BaseException], None] | None = None):
    """``fn(*args)``, called again after each failure (waits doubling from ``first`` to ``ceiling``).

    Gives up only when ``stop`` is set, re-raising the last failure. The
    waits end at once on ``stop``, so a stopping service does not linger.
    """
    delay = first
    while True:
        try:
            return fn(*args)
        except errors as e:
            if stop.is_set():
                raise
            if on_fail is not None:
                on_fail(e)
            if stop.wait(delay):
                raise
            delay = min(delay * 2, ceiling)


def _bad(reason: str, message: str) -> EnvelopeError:
    err = EnvelopeError(f"{reason}: {message}")
    err.reason = reason
    return err


class EventConsumer:
    """Subscribes, verifies, and hands batches to a :class:`Sink`; acknowledges after the sink.

    Either pass ``sink``, or ``on_event`` (and ``on_invalid``, ``seen``,
    ``rules``) for a :class:`PrintSink`.

    :param backend: the back end's private keys (events are encrypted to them).
    :param devices: public keys of the devices whose events are accepted, or
        a callable returning the current ring (re-read when a signer is unknown).
    :param share_group: subscribe as ``$share/<group>/…`` (load split between consumers).
    :param session_expiry: seconds the broker keeps this consumer's session
        (and queues events for it) while it is away; 0 = a fresh session each time.
    :param receive_maximum: messages the broker may send before they are
        acknowledged (MQTT v5 flow control: bounds what waits in memory).
    """

    def __init__(
        self,
        settings: MqttSettings,
        tls: TlsFiles | None,
        backend: PartyKeys,
        devices: KeyRing,
        *,
        on_event: Callable[[Event], None] | None = None,
        on_invalid: Callable[[Invalid], None] | None = None,
        sink: Sink | None = None,
        client_id: str = "kiosk-consumer",
        site: str = "+",
        device: str = "+",
        share_group: str | None = None,
        session_expiry: int = 0,
        seen: SeenIds | None = None,
        rules: FreshnessRules | None = None,
        receive_maximum: int = 1000,
        batch_max: int = BATCH_MAX,
        reload_devices: Callable[[], KeyRing] | None = None,
    ):
        if not backend.has_private:
            raise ValueError("the back end's private keys are needed to decrypt events")
        if sink is None:
            if on_event is None:
                raise ValueError("give a sink or on_event")
            sink = PrintSink(on_event, on_invalid or (lambda inv: None), seen or SeenIds(), rules or FreshnessRules())
        self.sink = sink
        self.settings = settings
        self.backend = backend
        self.devices = devices
        self._reload_devices = reload_devices
        self._reloaded_at = 0.0
        self.prefix = settings.topic_prefix
        topic = f"{self.prefix}/{site}/{device}/events"
        self.topic = f"$share/{share_group}/{topic}" if share_group else topic
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.batch_max = batch_max
        self.received = 0
        self.dropped_qos0 = 0  # messages sent without PUBACK: no door sends any (see _on_message)
        self._dropped_logged = -math.inf
        self.uncheckable = 0  # messages whose checking raised (a bug): refused as unreadable
        self._uncheckable_logged = -math.inf
        self.invalid = 0
        self.sink_failures = 0
        self.unstorable = 0
        self.last_error: str | None = None
        self._holding_since: float | None = None
        self._queue: queue.Queue = queue.Queue()
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stopping = threading.Event()
        self._client = new_client(settings, client_id, tls, reconnect=True, manual_ack=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=int(max(1, settings.reconnect_backoff_max)))
        q = self._queue
        # CONNACK and SUBACK are answered on paho's thread: with a session
        # resumed, the broker sends what it queued right after the CONNACK,
        # and the SUBACK must not wait behind those messages in the queue.
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = lambda c, u, flags, rc, props: q.put(("disconnect", reason_value(rc), str(rc)))
        self._client.on_message = self._on_message

    @property
    def duplicates(self) -> int:
        return getattr(self.sink, "duplicates", 0)

    @property
    def seen(self) -> SeenIds | None:
        return getattr(self.sink, "seen", None)

    def start(self, timeout: float | None = None) -> None:
        """Connect and subscribe; raise :class:`BrokerUnavailable` if not subscribed within ``timeout``."""
        timeout = self.settings.connect_timeout if timeout is None else timeout
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = self.receive_maximum
        props.MaximumPacketSize = MAX_PACKET_BYTES  # the broker drops larger ones before they take our memory
        clean = True
        if self.session_expiry:
            props.SessionExpiryInterval = self.session_expiry
            clean = False  # resume the session (and what the broker queued) after a restart
        try:
            self._client.connect(self.settings.host, self.settings.port, self.settings.keepalive,
                                 clean_start=clean, properties=props)
        except (OSError, ValueError) as e:
            raise BrokerUnavailable(f"cannot connect to {self.settings.url}: {e}") from None
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)
        self._thread.start()
        if not self._connected.wait(timeout):
            err = self._connect_error or (
                f"no CONNACK/SUBACK from {self.settings.url} within {timeout:g}s (is the client certificate accepted?)"
            )
            self.close()
            raise BrokerUnavailable(err)

    def stop(self) -> None:
        """Disconnect and end the thread; what is not yet acknowledged the broker sends again."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(10)
        self._client.disconnect()
        self._client.loop_stop()
        self._thread = None

    def close(self) -> None:
        """Stop and release; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.stop()

    def __enter__(self) -> "EventConsumer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            messages = []
            while True:
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                if item[0] == "message":
                    messages.append(item)
                else:
                    self._control(item)
                if len(messages) >= self.batch_max:
                    break
                try:
                    item = self._queue.get(timeout=BATCH_WAIT) if messages else self._queue.get_nowait()
                except queue.Empty:
                    break
            if messages:
                self._batch(messages)

    def _on_message(self, client, userdata, msg) -> None:
        """On paho's thread: queue the message. One sent at QoS 0 is dropped and counted: doors send at QoS 1 (their
        outbox waits for the PUBACK), and QoS 0 has no flow control, so a flood of them would fill our memory while
        the store is slow."""
        if msg.qos == 0:
            self.dropped_qos0 += 1
            if time.monotonic() - self._dropped_logged >= 60.0:
                self._dropped_logged = time.monotonic()
                log.warning("dropped messages sent at QoS 0 (no door sends any): %d so far", self.dropped_qos0)
            return
        self._queue.put(("message", msg, time.time()))

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        """On paho's thread: subscribe (again) on every connection."""
        if reason_value(rc) >= FAILURE:
            self._connect_error = f"broker refused the connection: {rc}"
            log.error("%s", self._connect_error)
            return
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client, userdata, mid, rcs, props) -> None:
        """On paho's thread: the subscription is in place (or refused)."""
        if any(reason_value(r) >= FAILURE for r in rcs):
            self._connect_error = f"broker refused the subscription to {self.topic}"
            log.error("%s", self._connect_error)
        else:
            log.info("subscribed to %s", self.topic)
            self._connected.set()

    def _control(self, item) -> None:
        if item[0] == "disconnect" and not self._stopping.is_set():
            log.warning("disconnected from broker: %s; reconnecting", item[2])

    def network_alive(self) -> bool:
        """paho's network thread still runs (it reconnects by itself; only an exception in a callback ends it)."""
        return loop_running(self._client)

    def _check(self, msg: mqtt.MQTTMessage, at: float) -> Event | Invalid:
        topic = topic_of(msg)
        checked = check_message(topic, msg.payload, self.backend, self.devices, self.prefix, at)
        if isinstance(checked, Invalid) and checked.reason == "unknown_signer" and self._reload_devices:
            # A door added since start: read the device keys again (at most every 10 s).
            if time.monotonic() - self._reloaded_at >= 10.0:
                self._reloaded_at = time.monotonic()
                try:
                    self.devices = self._reload_devices()
                    log.info("device keys read again: %d devices", len(self.devices.owners))
                except KioskError as e:
                    log.error("cannot read the device keys again: %s", e)
                except Exception as e:  # noqa: BLE001 - a bug in reading them must not stop every door
                    log.error("cannot read the device keys again (%s); the keys read before stay in use",
                              type(e).__name__)
                checked = check_message(topic, msg.payload, self.backend, self.devices, self.prefix, at)
        return checked

    def _check_guarded(self, msg: mqtt.MQTTMessage, at: float) -> Event | Invalid:
        """:meth:`_check`, with anything it raises making that one message a refusal (``unreadable``): acknowledged
        with the rest, never redelivered to stop the consumer again after each restart."""
        try:
            return self._check(msg, at)
        except MemoryError:
            raise  # not the message's fault: the service ends, systemd restarts it, the broker sends it again
        except Exception as e:  # noqa: BLE001 - one message must not stop the back end for every door
            data = bytes(msg.payload or b"")
            self.uncheckable += 1
            if time.monotonic() - self._uncheckable_logged >= 60.0:
                self._uncheckable_logged = time.monotonic()
                log.error("a message could not be checked (%s); refused, the rest go on (%d so far)",
                          type(e).__name__, self.uncheckable)
            return Invalid(topic=printable(topic_of(msg), 200), reason="unreadable",
                           detail=f"{type(e).__name__} while checking", received_at=at, payload_bytes=len(data),
                           payload_sha256=hashlib.sha256(data).hexdigest())

    def _sink_failed(self, e: BaseException, n: int) -> None:
        self.sink_failures += 1
        text = printable(f"{type(e).__name__}: {e}", 300)
        if text != self.last_error:
            log.error("could not hand on %d messages (%s); retrying, nothing acknowledged", n, text)
        self.last_error = text

    def _transient(self, e: BaseException) -> bool:
        judge = getattr(self.sink, "transient", None)
        return True if judge is None else bool(judge(e))

    def _take(self, items: list) -> None:
        """``sink.take`` for these checked messages, retried with backoff while its failure is transient.

        Raises a failure that is not transient, or :class:`_Stopping`.
        """
        events = [x for x in items if isinstance(x, Event)]
        invalid = [x for x in items if not isinstance(x, Event)]
        delay, ceiling = 0.2, max(1.0, self.settings.reconnect_backoff_max)
        while True:
            try:
                self.sink.take(events, invalid)
                return
            except Exception as e:
                if self._stopping.is_set():
                    raise _Stopping from e
                if not self._transient(e):
                    raise
                self._sink_failed(e, len(items))
                if self._stopping.wait(delay):
                    raise _Stopping from e
                delay = min(delay * 2, ceiling)

    def _hand_on(self, items: list) -> None:
        """Hand checked messages to the sink; a failure that is not transient is isolated to its message.

        The batch is split in halves until the message that the sink cannot
        take is alone; that one is recorded as refused (``unstorable``) and the
        rest are taken as usual.
        """
        try:
            self._take(items)
            return
        except _Stopping:
            raise
        except Exception as e:
            failure = e
        if len(items) > 1:
            mid = len(items) // 2
            self._hand_on(items[:mid])
            self._hand_on(items[mid:])
            return
        item = items[0]
        log.error("the store refused one message on %s (%s); recorded as refused, the rest go on",
                  printable(item.topic, 200), type(failure).__name__)
        refusal = Invalid(topic=item.topic, reason="unstorable", received_at=item.received_at,
                          detail=printable(f"the store could not take it: {type(failure).__name__}: {failure}"),
                          payload_bytes=item.payload_bytes, payload_sha256=item.payload_sha256)
        try:
            self._take([refusal])
            self.unstorable += 1
            return
        except _Stopping:
            raise
        except Exception:
            # Even the refusal cannot be stored: the fault is the store's (read-only, full, permissions), so wait
            # for it as for an outage, offering it the message itself first: refused only if the store, taking
            # writes again, still will not take it.
            bare = replace(refusal, detail="", topic=printable(item.topic, 200))
            while True:
                for attempt in (item, bare):
                    try:
                        self._take([attempt])
                    except _Stopping:
                        raise
                    except Exception as e:
                        error = e
                        continue
                    if attempt is item:
                        log.info("the store took the message on %s after all", printable(item.topic, 200))
                    else:
                        self.unstorable += 1
                    return
                self._sink_failed(error, 1)
                if self._stopping.wait(max(1.0, self.settings.reconnect_backoff_max)):
                    raise _Stopping from error

    def stalled_for(self) -> float:
        """Seconds the consumer has held messages it could not hand on (0 while messages move)."""
        started = self._holding_since
        return 0.0 if started is None else max(0.0, time.monotonic() - started)

    def _batch(self, messages: list) -> None:
        """Check each message, hand the batch to the sink, then acknowledge it."""
        self._holding_since = time.monotonic()
        checked = []
        for _, msg, at in messages:
            self.received += 1
            checked.append(self._check_guarded(msg, at))
        self.invalid += sum(1 for c in checked if not isinstance(c, Event))
        try:
            self._hand_on(checked)
        except _Stopping:
            # Not acknowledged, so the broker keeps them for this session and sends them again.
            return
        if self.last_error is not None:
            log.info("handing on messages again")
            self.last_error = None
        for _, msg, _ in messages:
            self._client.ack(msg.mid, msg.qos)
        self._holding_since = None


class _Stopping(Exception):
    """The consumer is stopping while a batch waits: it stays unacknowledged."""
