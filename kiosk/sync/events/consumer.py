"""The reference consumer: what a back end does with the devices' events.

It subscribes to ``PREFIX/+/+/events`` (optionally as an MQTT v5 shared
subscription, ``$share/GROUP/…``, so that several consumers split a fleet's
load), decrypts each envelope with the back end's key, verifies it against
the devices' public keys, checks that the signer, the claims and the topic
all name the same device, and drops duplicates by event id. A message that
fails any check is reported as :class:`Invalid`, never as an event.

paho's network thread only queues what arrives; the consumer's own thread
("consumer") checks it, hands it to the sinks, and only then acknowledges it
to the broker (manual PUBACK), so an event is not lost if the consumer dies
half-way.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ...config import MqttSettings
from ...errors import BrokerUnavailable, EnvelopeError
from ..envelope import EVENT_TYP, open_sealed
from ..keys import KeyRing, PartyKeys
from ..mqtt import FAILURE, TlsFiles, new_client, parse_event_topic, reason_value

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """A verified, decrypted, first-seen event."""

    claims: dict[str, Any]
    topic: str
    signer: str


@dataclass(frozen=True)
class Invalid:
    """A message on an events topic that failed verification."""

    topic: str
    reason: str
    detail: str


class SeenIds:
    """Event ids already handed on: in memory, or in a SQLite file that survives restarts."""

    def __init__(self, path: Path | str | None = None):
        self._conn = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, received_at REAL NOT NULL)")
        self._lock = threading.Lock()

    def add(self, event_id: str) -> bool:
        """Record ``event_id``; True if it was new."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO seen(event_id, received_at) VALUES (?, ?)", [event_id, time.time()]
            )
            return cur.rowcount == 1

    def __contains__(self, event_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM seen WHERE event_id = ?", [event_id]).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM seen").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def verify_event(topic: str, payload: bytes, backend: PartyKeys, devices: KeyRing, prefix: str) -> Event:
    """Open and check one message; raises :class:`EnvelopeError` (with ``reason``)."""
    where = parse_event_topic(topic, prefix)
    if where is None:
        raise _bad("topic_mismatch", f"not an events topic under {prefix!r}")
    opened = open_sealed(payload, backend, devices, typ=EVENT_TYP)
    claims = opened.claims
    for name, kind in (("event_id", str), ("seq", int), ("site", str), ("device", str), ("type", str)):
        if not isinstance(claims.get(name), kind):
            raise _bad("missing_claims", f"claim {name!r} missing or not a {kind.__name__}")
    said = f"{claims['site']}/{claims['device']}"
    if said != opened.signer:
        raise _bad("claims_mismatch", f"event claims to be from {said} but is signed by {opened.signer}")
    if (claims["site"], claims["device"]) != where:
        raise _bad("topic_mismatch", f"event from {said} arrived on {topic}")
    return Event(claims=claims, topic=topic, signer=opened.signer)


def _bad(reason: str, message: str) -> EnvelopeError:
    err = EnvelopeError(f"{reason}: {message}")
    err.reason = reason
    return err


class EventConsumer:
    """Subscribes, verifies, de-duplicates and hands events to ``on_event``.

    :param backend: the back end's private keys (events are encrypted to them).
    :param devices: public keys of the devices whose events are accepted.
    :param share_group: subscribe as ``$share/<group>/…`` (load split between consumers).
    :param session_expiry: seconds the broker keeps this consumer's session
        (and queues events for it) while it is away; 0 = a fresh session each time.
    """

    def __init__(
        self,
        settings: MqttSettings,
        tls: TlsFiles | None,
        backend: PartyKeys,
        devices: KeyRing,
        *,
        on_event: Callable[[Event], None],
        on_invalid: Callable[[Invalid], None] | None = None,
        client_id: str = "kiosk-consumer",
        site: str = "+",
        device: str = "+",
        share_group: str | None = None,
        session_expiry: int = 0,
        seen: SeenIds | None = None,
    ):
        if not backend.has_private:
            raise ValueError("the back end's private keys are needed to decrypt events")
        self.settings = settings
        self.backend = backend
        self.devices = devices
        self.on_event = on_event
        self.on_invalid = on_invalid or (lambda inv: None)
        self.prefix = settings.topic_prefix
        topic = f"{self.prefix}/{site}/{device}/events"
        self.topic = f"$share/{share_group}/{topic}" if share_group else topic
        self.seen = seen or SeenIds()
        self.session_expiry = session_expiry
        self.received = 0
        self.duplicates = 0
        self.invalid = 0
        self._queue: queue.Queue = queue.Queue()
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stopping = False
        self._client = new_client(settings, client_id, tls, reconnect=True, manual_ack=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=int(max(1, settings.reconnect_backoff_max)))
        q = self._queue
        self._client.on_connect = lambda c, u, flags, rc, props: q.put(("connack", reason_value(rc), str(rc)))
        self._client.on_disconnect = lambda c, u, flags, rc, props: q.put(("disconnect", reason_value(rc), str(rc)))
        self._client.on_subscribe = lambda c, u, mid, rcs, props: q.put(("suback", [reason_value(r) for r in rcs]))
        self._client.on_message = lambda c, u, msg: q.put(("message", msg))

    def start(self, timeout: float | None = None) -> None:
        """Connect and subscribe; raise :class:`BrokerUnavailable` if not subscribed within ``timeout``."""
        timeout = self.settings.connect_timeout if timeout is None else timeout
        props = Properties(PacketTypes.CONNECT)
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
        if self._thread is None:
            return
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._queue.put(None)
        self._thread.join(5)
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
            try:
                self._handle(item)
            except Exception:
                # A sink failed: the message stays unacknowledged, the broker resends it.
                log.exception("consumer failed on %s", item[0])

    def _handle(self, item) -> None:
        kind = item[0]
        if kind == "connack":
            if item[1] >= FAILURE:
                self._connect_error = f"broker refused the connection: {item[2]}"
                log.error("%s", self._connect_error)
                return
            self._client.subscribe(self.topic, qos=1)
        elif kind == "suback":
            if any(rc >= FAILURE for rc in item[1]):
                self._connect_error = f"broker refused the subscription to {self.topic}"
                log.error("%s", self._connect_error)
            else:
                log.info("subscribed to %s", self.topic)
                self._connected.set()
        elif kind == "disconnect" and not self._stopping:
            log.warning("disconnected from broker: %s; reconnecting", item[2])
        elif kind == "message":
            self._on_message(item[1])

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        self.received += 1
        try:
            event = verify_event(msg.topic, msg.payload, self.backend, self.devices, self.prefix)
        except EnvelopeError as e:
            self.invalid += 1
            self.on_invalid(Invalid(topic=msg.topic, reason=getattr(e, "reason", "invalid"), detail=str(e)))
        else:
            event_id = event.claims["event_id"]
            if event_id in self.seen:
                self.duplicates += 1
            else:
                self.on_event(event)  # handed on first, then remembered: a failing sink loses nothing
                self.seen.add(event_id)
        self._client.ack(msg.mid, msg.qos)
