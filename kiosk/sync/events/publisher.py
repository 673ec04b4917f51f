"""The publisher: copies the outbox to MQTT, in sequence order, at least once.

It runs in its own thread ("publisher"); paho's network thread only hands
CONNACKs, PUBACKs and disconnects to it through a queue. Each connection is
a fresh paho client with a clean start: whatever was in flight when a link
died is simply sent again from the outbox on the next connection (the back
end drops duplicates by event id). An event is marked delivered only when
the broker's PUBACK says a subscriber took it: "no matching subscribers"
(reason 16: the back end has not subscribed yet) leaves it undelivered and
holds publishing for a growing backoff (``[mqtt] require_subscriber``); a
refusal (e.g. not authorized) leaves it undelivered, raises an alarm, and the
publisher reconnects after the longest backoff. On stop, it goes on sending
for up to ``[mqtt] stop_grace_s`` before it disconnects.

Topics: ``PREFIX/SITE/DEVICE/events`` (QoS 1, one sealed envelope each) and
the retained ``…/status`` (QoS 1, JSON, no personal data), with a last will
that marks the device offline.

Other stages share this one connection: :meth:`Publisher.subscribe` adds
topics subscribed on every connection (their handler runs on paho's network
thread and only queues), :meth:`Publisher.send` publishes a message of
theirs (gallery acks), and :meth:`Publisher.request_status` sends the status
now rather than at the next interval.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ...config import KioskConfig, MqttSettings
from ...errors import KeyFileError
from .. import keys as keymod
from ..envelope import seal
from ..keys import PartyKeys, load_device_keys
from ..mqtt import FAILURE, Topics, force_close, new_client, reason_value, tls_files
from .outbox import Outbox

log = logging.getLogger(__name__)

#: Seconds between purges of delivered events past their retention.
PURGE_INTERVAL = 600.0
#: Seconds a clean stop waits for the broker to take the "offline" status.
OFFLINE_ACK_WAIT = 2.0
#: Acknowledged events are marked delivered in one transaction per this many,
#: or after this many seconds: a crash in between only sends them again.
MARK_BATCH = 500
MARK_DELAY = 0.1
#: PUBACK reason code "no matching subscribers" (MQTT v5 §3.4.2.1).
NO_MATCHING_SUBSCRIBERS = 16

_STOP = object()


class Publisher:
    """Publishes the outbox's undelivered events and the device status.

    :param outbox: the device's :class:`Outbox` (site and device come from it).
    :param settings: the ``[mqtt]`` settings.
    :param device_keys: this device's private keys (signs events).
    :param backend_public_key: the back end's keys or its public P-256
        encryption key (events are encrypted to it).
    :param status_provider: returns extra status fields (versions, location
        state …); called from the publisher thread.
    :param base_dir: where relative TLS file names are found (the state dir).
    """

    def __init__(
        self,
        outbox: Outbox,
        settings: MqttSettings,
        device_keys: PartyKeys,
        backend_public_key,
        *,
        status_provider: Callable[[], dict[str, Any]] | None = None,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        if not device_keys.has_private:
            raise KeyFileError("the device's private keys are needed to sign events")
        self.outbox = outbox
        self.settings = settings
        self.device_keys = device_keys
        self.recipient = backend_public_key.public().encryption if isinstance(backend_public_key, PartyKeys) else backend_public_key
        if self.recipient.is_private:
            # Only the public half is needed; keep the private one out of this process's use.
            self.recipient = keymod.public_key(self.recipient)
        self.topics = Topics(settings.topic_prefix, outbox.site, outbox.device)
        self.client_id = f"kiosk-{outbox.site}-{outbox.device}"
        self.status_provider = status_provider
        self._tls = tls_files(settings, base_dir)  # checked now: a bad path fails at start-up
        self._clock = clock
        self._wall = wall_clock
        self._rng = random.Random()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._wake_pending = threading.Event()
        self._closed = False
        # Publisher-thread state.
        self._client: mqtt.Client | None = None
        self._gen = 0
        self._connected = False
        self._connect_deadline: float | None = None
        self._inflight: OrderedDict[int, int] = OrderedDict()  # mid -> seq
        self._status_mids: set[int] = set()
        self._last_sent_seq = 0
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._acked: list[int] = []  # acknowledged, not yet marked delivered
        self._mark_due = 0.0
        self._hold_until = 0.0  # no subscriber: no events sent before this
        self._hold_backoff = 0.0
        self._next_status = 0.0
        self._next_purge = 0.0
        self._last_alarm: str | None = None
        # Read by other threads (plain values, replaced whole).
        self.connected_since: float | None = None
        self.last_error: str | None = None
        self.delivered = 0
        self.refused = 0
        self.connections = 0
        self.peak_inflight = 0
        self.held: str | None = None  # why events are held back ("no_subscriber"), or None
        self.no_subscriber = 0
        # Other stages' topics and messages (see subscribe and send).
        self._subscriptions: tuple[tuple[str, int, Callable[[str, bytes], None]], ...] = ()
        self._outgoing: list[tuple[str, bytes, int, bool]] = []  # publisher thread only
        self._outgoing_mids: dict[int, tuple[str, bytes, int, bool]] = {}

    @classmethod
    def from_config(cls, config: KioskConfig, outbox: Outbox, **kwargs) -> "Publisher":
        """Build from the config, loading and checking the key files.

        Raises :class:`~kiosk.errors.KeyFileError` for a key file that is
        missing, malformed or readable by others.
        """
        device, backend = load_device_keys(config)
        return cls(outbox, config.mqtt, device, backend, base_dir=config.device.state_dir, **kwargs)

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("publisher is closed")
        if self._thread is not None:
            return
        self.outbox.add_listener(self._on_commit)
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()
        log.info("publishing %s to %s", self.topics.events, self.settings.url)

    def stop(self, timeout: float | None = None) -> bool:
        """Send what it can within ``stop_grace_s``, publish "offline", disconnect and end the thread.

        True if the thread ended within ``timeout`` (default: the grace period and 5 s more).
        """
        t = self._thread
        if t is None:
            return True
        if timeout is None:
            timeout = self.settings.stop_grace_s + 5.0
        self._queue.put(_STOP)
        t.join(timeout)
        if t.is_alive():
            log.warning("publisher did not stop within %.1fs", timeout)
            return False
        self._thread = None
        self.outbox.remove_listener(self._on_commit)
        return True

    def close(self) -> None:
        """Stop (if running) and release everything; safe to call twice."""
        if self._closed:
            return
        self.stop()
        self._closed = True

    def __enter__(self) -> "Publisher":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what others may ask ------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.connected_since is not None

    def health(self) -> dict[str, Any]:
        """For the daemon's status and watchdog: link state and counters."""
        return {
            "connected": self.connected,
            "connected_since": self.connected_since,
            "last_error": self.last_error,
            "delivered": self.delivered,
            "refused": self.refused,
            "connections": self.connections,
            "inflight": len(self._inflight),
            "peak_inflight": self.peak_inflight,
            "held": self.held,
            "no_subscriber": self.no_subscriber,
        }

    def subscribe(self, topics: list[str], handler: Callable[[str, bytes], None], *, qos: int = 1) -> None:
        """Subscribe to ``topics`` now (if connected) and on every later connection.

        ``handler(topic, payload)`` runs on paho's network thread: it must
        only hand the message to a queue.
        """
        self._subscriptions = self._subscriptions + tuple((t, qos, handler) for t in topics)
        self._queue.put(("resubscribe",))

    def send(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False) -> None:
        """Publish another stage's message on this connection, when connected.

        While offline, a retained message replaces an older one still waiting
        for the same topic; one not taken by the broker is not sent again.
        """
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        self._queue.put(("send", topic, data, qos, retain))

    def request_status(self) -> None:
        """Publish the retained status now (its fields changed)."""
        self._queue.put(("status_now",))

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the outbox has nothing undelivered; True if it got there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.depth() == 0:
                return True
            time.sleep(0.05)
        return self.outbox.depth() == 0

    # -- callbacks (paho's network thread or the committing thread) -----------

    def _on_commit(self, seq: int) -> None:
        if not self._wake_pending.is_set():
            self._wake_pending.set()
            self._queue.put(("wake",))

    def _callbacks(self, client: mqtt.Client, gen: int) -> None:
        q = self._queue
        client.on_connect = lambda c, u, flags, rc, props: q.put(("connack", gen, reason_value(rc), str(rc)))
        client.on_disconnect = lambda c, u, flags, rc, props: q.put(("disconnect", gen, reason_value(rc), str(rc)))
        client.on_publish = lambda c, u, mid, rc, props: q.put(("puback", gen, mid, reason_value(rc), str(rc)))
        client.on_subscribe = lambda c, u, mid, rcs, props: q.put(("suback", gen, [(reason_value(r), str(r)) for r in rcs]))
        client.on_message = self._on_message

    def _on_message(self, client, userdata, msg) -> None:
        """On paho's network thread: hand the message to the handler of its subscription."""
        for topic, _qos, handler in self._subscriptions:
            if mqtt.topic_matches_sub(topic, msg.topic):
                try:
                    handler(msg.topic, msg.payload)
                except Exception:
                    log.exception("handler for %s failed", topic)
                return

    # -- the publisher thread -------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    if self._step():
                        break
                except Exception as e:  # keep publishing: the outbox still holds everything
                    log.exception("publisher error; reconnecting after backoff")
                    self.last_error = f"internal error: {e}"
                    self._drop_connection(failed=True)
        finally:
            self._shutdown()

    def _step(self, max_wait: float | None = None) -> bool:
        """One turn of the loop; True when asked to stop."""
        now = self._clock()
        if self._client is None and now >= self._next_attempt:
            self._connect()
        if self._connect_deadline is not None and self._clock() >= self._connect_deadline:
            self._fail(
                f"no CONNACK from {self.settings.url} within {self.settings.connect_timeout:g}s"
                " (is this device's client certificate accepted?)"
            )
        if self._connected:
            self._fill_window()
            self._send_outgoing()
            alarm = self.outbox.alarm
            if self._clock() >= self._next_status or alarm != self._last_alarm:
                self._publish_status()
        if self._clock() >= self._next_purge:
            self._next_purge = self._clock() + PURGE_INTERVAL
            self.outbox.purge_delivered()
        wait = self._wait_time()
        stop = self._handle(wait if max_wait is None else min(wait, max_wait))
        if self._acked and self._clock() >= self._mark_due:
            self._flush_marks()
        return stop

    def _wait_time(self) -> float:
        now = self._clock()
        deadlines = [self._next_purge, now + 1.0]
        if self._client is None:
            deadlines.append(self._next_attempt)
        if self._connect_deadline is not None:
            deadlines.append(self._connect_deadline)
        if self._acked:
            deadlines.append(self._mark_due)
        if self._connected:
            deadlines.append(self._next_status)
            if self._hold_until > now:
                deadlines.append(self._hold_until)
        return min(max(0.0, d - now) for d in deadlines)

    def _handle(self, wait: float) -> bool:
        """Take what the callbacks queued (waiting up to ``wait``); True on stop."""
        try:
            items = [self._queue.get(timeout=wait)]
        except queue.Empty:
            return False
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        acked: list[int] = []
        stop = False
        for item in items:
            if item is _STOP:
                stop = True
                continue
            kind = item[0]
            if kind == "wake":
                self._wake_pending.clear()
                continue
            if kind in ("send", "resubscribe", "status_now"):
                self._local(item)
                continue
            if item[1] != self._gen:
                continue  # from a client already torn down
            if kind == "puback":
                self._on_puback(item[2], item[3], item[4], acked)
            elif kind == "connack":
                self._on_connack(item[2], item[3])
            elif kind == "disconnect":
                self._on_disconnect(item[2], item[3])
            elif kind == "suback":
                for rc, text in item[2]:
                    if rc >= FAILURE:
                        log.error("broker refused a subscription: %s", text)
        if acked:
            self._acked.extend(acked)
        if self._acked and (len(self._acked) >= MARK_BATCH or self._clock() >= self._mark_due or stop):
            self._flush_marks()
        return stop

    def _flush_marks(self) -> None:
        """Mark the acknowledged events delivered, in one transaction."""
        acked, self._acked = self._acked, []
        self._mark_due = self._clock() + MARK_DELAY
        if acked:
            self.delivered += self.outbox.mark_delivered_many(acked)

    def _local(self, item: tuple) -> None:
        """Requests from other stages (publisher thread)."""
        kind = item[0]
        if kind == "send":
            msg = item[1:]
            if msg[3]:  # retained: only the newest per topic matters
                self._outgoing = [m for m in self._outgoing if not (m[3] and m[0] == msg[0])]
            self._outgoing.append(msg)
        elif kind == "resubscribe":
            if self._connected:
                self._subscribe_all()
        elif kind == "status_now":
            self._next_status = 0.0

    def _subscribe_all(self) -> None:
        subs = self._subscriptions
        if subs:
            self._client.subscribe([(topic, qos) for topic, qos, _ in subs])

    def _send_outgoing(self) -> None:
        while self._outgoing:
            msg = self._outgoing[0]
            info = self._client.publish(msg[0], msg[1], qos=msg[2], retain=msg[3])
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return  # the link went away; its disconnect is on the queue
            self._outgoing.pop(0)
            self._outgoing_mids[info.mid] = msg

    def _on_puback(self, mid: int, rc: int, text: str, acked: list[int]) -> None:
        msg = self._outgoing_mids.pop(mid, None)
        if msg is not None:
            if rc >= FAILURE:
                log.error("broker refused a message on %s: %s", msg[0], text)
            return
        if mid in self._status_mids:
            self._status_mids.discard(mid)
            if rc >= FAILURE:
                log.error("broker refused the status message: %s", text)
            return
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return
        if rc == NO_MATCHING_SUBSCRIBERS and self.settings.require_subscriber:
            self._hold_no_subscriber(seq)
            return
        if rc < FAILURE:
            acked.append(seq)
            if self.held is not None:
                log.info("a subscriber took event seq %d: publishing again", seq)
                self.held = None
                self._hold_backoff = 0.0
                self._next_status = 0.0
            return
        self.refused += 1
        self._fail(f"broker refused event seq {seq} on {self.topics.events}: {text}", refused=True)

    def _hold_no_subscriber(self, seq: int) -> None:
        """Nobody took event ``seq``: keep it, send it again after a growing backoff."""
        self.no_subscriber += 1
        # Send again from the oldest event nobody took.
        self._last_sent_seq = min(self._last_sent_seq, seq - 1)
        if self._hold_until > self._clock():
            return  # the other events of the same window
        s = self.settings
        self._hold_backoff = min(s.reconnect_backoff_max, max(s.reconnect_backoff_initial, self._hold_backoff * 2))
        self._hold_until = self._clock() + self._hold_backoff * self._rng.uniform(0.8, 1.2)
        if self.held is None:
            log.warning("no subscriber on %s took event seq %d: events stay in the outbox, sent again with backoff "
                        "(has the back end subscribed with a persistent session?)", self.topics.events, seq)
            self.held = "no_subscriber"
            self._next_status = 0.0

    def _on_connack(self, rc: int, text: str) -> None:
        if rc >= FAILURE:
            self._fail(f"broker refused the connection: {text}")
            return
        self._connect_deadline = None
        self._connected = True
        self._backoff = 0.0
        self._last_sent_seq = 0  # resend everything undelivered, oldest first
        self._inflight.clear()
        self.connected_since = self._wall()
        self.connections += 1
        self.last_error = None
        log.info("connected to %s; %d events to send", self.settings.url, self.outbox.depth())
        self._next_status = 0.0
        self._subscribe_all()

    def _on_disconnect(self, rc: int, text: str) -> None:
        if self._connected:
            self._fail(f"connection to {self.settings.url} lost: {text}")
        else:
            self._fail(f"connection to {self.settings.url} closed before CONNACK ({text}); is the client certificate accepted?")

    def _connect(self) -> None:
        self._gen += 1
        client = new_client(self.settings, self.client_id, self._tls)
        client.max_inflight_messages_set(self.settings.inflight)
        client.max_queued_messages_set(0)
        client.will_set(self.topics.status, self._status_payload("offline", "connection lost"), qos=1, retain=True)
        self._callbacks(client, self._gen)
        self._client = client
        try:
            client.connect(self.settings.host, self.settings.port, self.settings.keepalive, clean_start=True)
        except (OSError, ValueError) as e:  # refused, unreachable, TLS handshake failed
            self._fail(f"cannot connect to {self.settings.url}: {e}")
            return
        client.loop_start()
        self._connect_deadline = self._clock() + self.settings.connect_timeout

    def _fill_window(self) -> None:
        if self._hold_until > self._clock() or (self._hold_until and self._inflight):
            return  # held: wait for the backoff, and for the window's last answers
        self._hold_until = 0.0
        room = self.settings.inflight - len(self._inflight)
        if room <= 0:
            return
        props = Properties(PacketTypes.PUBLISH)
        props.PayloadFormatIndicator = 1
        props.ContentType = "application/jose"
        for event in self.outbox.undelivered(limit=room, after_seq=self._last_sent_seq):
            token = seal(event.claims, self.device_keys, self.recipient)
            info = self._client.publish(self.topics.events, token, qos=1, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # The link went away under us; its disconnect is on the queue.
                log.debug("publish of seq %d failed: %s", event.seq, mqtt.error_string(info.rc))
                return
            self._inflight[info.mid] = event.seq
            self._last_sent_seq = event.seq
            self.peak_inflight = max(self.peak_inflight, len(self._inflight))

    def _status_payload(self, state: str, reason: str | None = None) -> str:
        payload: dict[str, Any] = {
            "state": state,
            "site": self.outbox.site,
            "device": self.outbox.device,
            "time": round(self._wall(), 3),
        }
        if reason:
            payload["reason"] = reason
        return json.dumps(payload, sort_keys=True)

    def _publish_status(self, state: str = "online", reason: str | None = None) -> int | None:
        payload = json.loads(self._status_payload(state, reason))
        stats = self.outbox.stats()
        self._last_alarm = stats["alarm"]
        payload["outbox"] = stats
        payload["publisher"] = {"delivered": self.delivered, "refused": self.refused, "last_error": self.last_error,
                                "held": self.held}
        if self.status_provider is not None:
            try:
                extra = self.status_provider()
            except Exception:
                log.exception("status provider failed; status sent without its fields")
                extra = {"status_error": "status provider failed"}
            for k, v in (extra or {}).items():
                payload.setdefault(k, v)
        self._next_status = self._clock() + self.settings.status_interval
        info = self._client.publish(self.topics.status, json.dumps(payload, sort_keys=True), qos=1, retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._status_mids.add(info.mid)
            return info.mid
        return None

    def _fail(self, message: str, *, refused: bool = False) -> None:
        if message != self.last_error:
            log.log(logging.ERROR if refused else logging.WARNING, "%s", message)
        self.last_error = message
        self._drop_connection(failed=True, longest=refused)

    def _drop_connection(self, *, failed: bool, longest: bool = False) -> None:
        client, self._client = self._client, None
        self._gen += 1  # what the old client still says is ignored
        self._connected = False
        self._connect_deadline = None
        self._inflight.clear()
        self._status_mids.clear()
        # Other stages' messages not yet taken go out on the next connection.
        again = [m for m in self._outgoing_mids.values()
                 if not (m[3] and any(n[3] and n[0] == m[0] for n in self._outgoing))]
        self._outgoing = again + self._outgoing
        self._outgoing_mids.clear()
        self.connected_since = None
        if client is not None:
            _teardown(client)
        if failed:
            s = self.settings
            if longest:
                self._backoff = s.reconnect_backoff_max
            else:
                self._backoff = min(s.reconnect_backoff_max, max(s.reconnect_backoff_initial, self._backoff * 2))
            delay = self._backoff * self._rng.uniform(0.8, 1.2)
            self._next_attempt = self._clock() + delay

    def _drain(self) -> None:
        """On stop: go on sending undelivered events for up to ``stop_grace_s``."""
        deadline = self._clock() + self.settings.stop_grace_s
        while self._clock() < deadline:
            if self._client is None or self._hold_until > self._clock():
                return  # not connected (not even connecting), or nobody subscribed
            if self._connected and not self._inflight and self.outbox.depth() == 0:
                return
            self._step(max_wait=min(0.05, max(0.0, deadline - self._clock())))

    def _shutdown(self) -> None:
        """On stop: send what it can within the grace period, say "offline" (retained), disconnect."""
        try:
            self._drain()
        except Exception:
            log.exception("could not send the last events on stop")
        finally:
            self._flush_marks()
        if self._connected and self._client is not None:
            try:
                mid = self._publish_status("offline", "stopped")
                deadline = self._clock() + OFFLINE_ACK_WAIT
                while mid in self._status_mids and self._clock() < deadline and self._connected:
                    self._handle(0.05)
            except Exception:
                log.exception("could not publish the offline status")
        self._drop_connection(failed=False)
        log.info("publisher stopped; %d events undelivered", self.outbox.depth())


def _teardown(client: mqtt.Client) -> None:
    """Disconnect a client and end its network thread, even on a dead link."""
    try:
        client.disconnect()
    except Exception:  # already gone
        pass
    if client.socket() is not None:
        # Give the DISCONNECT a moment to go out, then pull the socket.
        deadline = time.monotonic() + 0.5
        while client.socket() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        force_close(client)
    client.loop_stop()
