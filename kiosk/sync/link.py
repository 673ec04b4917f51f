"""The door's connection to the broker, shared by every stage that speaks MQTT.

It runs in its own thread ("publisher"); paho's network thread only hands
CONNACKs, PUBACKs, SUBACKs, messages and disconnects to it through a queue.
Each connection is a fresh paho client with a clean start. A failed or lost
connection is tried again after a growing, jittered backoff
(``[mqtt] reconnect_backoff_*``); a refusal waits the longest backoff.

Topics: the retained ``PREFIX/SITE/DEVICE/status`` (QoS 1, JSON, no
personal data), with a last will that marks the device offline.

Other stages share this one connection: :meth:`BrokerLink.subscribe` adds
topics subscribed on every connection (their handler runs on paho's network
thread and only queues), :meth:`BrokerLink.send` publishes a message of
theirs (gallery acks), and :meth:`BrokerLink.request_status` sends the
status now rather than at the next interval.

The outbox drain (the in-flight window of events and their PUBACK marks) is
:class:`kiosk.sync.events.publisher.Publisher`, built on this link.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from ..config import MqttSettings
from .mqtt import FAILURE, Topics, force_close, loop_running, new_client, reason_value, tls_files, topic_of

log = logging.getLogger(__name__)

#: Seconds a clean stop waits for the broker to take the "offline" status.
OFFLINE_ACK_WAIT = 2.0

_STOP = object()


class BrokerLink:
    """One device's connection: connect, backoff, subscriptions, status and last will.

    :param settings: the ``[mqtt]`` settings.
    :param topics: this device's topics.
    :param client_id: the MQTT client id.
    :param status_provider: returns extra status fields (versions, location
        state …); called from the link's thread.
    :param base_dir: where relative TLS file names are found (the state dir).
    """

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        client_id: str,
        *,
        status_provider: Callable[[], dict[str, Any]] | None = None,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.topics = topics
        self.client_id = client_id
        self.status_provider = status_provider
        self._tls = tls_files(settings, base_dir)  # checked now: a bad path fails at start-up
        self._clock = clock
        self._wall = wall_clock
        self._rng = random.Random()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Link-thread state.
        self._client: mqtt.Client | None = None
        self._gen = 0
        self._connected = False
        self._connect_deadline: float | None = None
        self._status_mids: set[int] = set()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._next_status = 0.0
        # Read by other threads (plain values, replaced whole).
        self.connected_since: float | None = None
        self.last_error: str | None = None
        self.connections = 0
        # Other stages' topics and messages (see subscribe and send).
        self._subscriptions: tuple[tuple[str, int, Callable[[str, bytes], None]], ...] = ()
        self._outgoing: list[tuple[str, bytes, int, bool]] = []  # link thread only
        self._outgoing_mids: dict[int, tuple[str, bytes, int, bool]] = {}

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("publisher is closed")
        if self._thread is not None:
            return
        self._attach()
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
        self._detach()
        return True

    def close(self) -> None:
        """Stop (if running) and release everything; safe to call twice."""
        if self._closed:
            return
        self.stop()
        self._closed = True

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what others may ask ------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.connected_since is not None

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

    # -- what the outbox drain adds (see kiosk.sync.events.publisher) ---------

    def _attach(self) -> None:
        """On start, before the thread runs."""

    def _detach(self) -> None:
        """On stop, after the thread ended."""

    def _while_connected(self) -> None:
        """Each turn of the loop while connected, before other stages' messages."""

    def _each_turn(self) -> None:
        """Each turn of the loop, connected or not."""

    def _after_turn(self) -> None:
        """Each turn of the loop, after the queue was handled."""

    def _deadlines(self, now: float) -> list[float]:
        """When the loop must wake up next, besides the link's own deadlines."""
        return []

    def _on_item(self, item: tuple) -> bool:
        """A local queue item the link does not know; True if taken."""
        return False

    def _on_ack(self, mid: int, rc: int, text: str, acked: list[int]) -> None:
        """A PUBACK that is not for the status or another stage's message."""

    def _after_handle(self, acked: list[int], stop: bool) -> None:
        """After a batch of queue items was handled."""

    def _on_link_up(self) -> None:
        """On CONNACK, before the link subscribes."""

    def _on_link_down(self) -> None:
        """When a connection is dropped."""

    def _status_fields(self, payload: dict[str, Any]) -> None:
        """Add fields to the status payload."""

    def _drain(self) -> None:
        """On stop, before "offline" is published."""

    def _flush_marks(self) -> None:
        """On stop, after draining, whatever happened."""

    def _stopped(self) -> None:
        """On stop, after disconnecting."""

    # -- callbacks (paho's network thread) -------------------------------------

    def _callbacks(self, client: mqtt.Client, gen: int) -> None:
        q = self._queue
        client.on_connect = lambda c, u, flags, rc, props: q.put(("connack", gen, reason_value(rc), str(rc)))
        client.on_disconnect = lambda c, u, flags, rc, props: q.put(("disconnect", gen, reason_value(rc), str(rc)))
        client.on_publish = lambda c, u, mid, rc, props: q.put(("puback", gen, mid, reason_value(rc), str(rc)))
        client.on_subscribe = lambda c, u, mid, rcs, props: q.put(("suback", gen, [(reason_value(r), str(r)) for r in rcs]))
        client.on_message = self._on_message

    def _on_message(self, client, userdata, msg) -> None:
        """On paho's network thread: hand the message to the handler of its subscription."""
        name = topic_of(msg)
        for topic, _qos, handler in self._subscriptions:
            if mqtt.topic_matches_sub(topic, name):
                try:
                    handler(name, msg.payload)
                except Exception:
                    log.exception("handler for %s failed", topic)
                return

    # -- the link's thread -----------------------------------------------------

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
            self._while_connected()
            self._send_outgoing()
            if self._clock() >= self._next_status or self._status_changed():
                self._publish_status()
        self._each_turn()
        wait = self._wait_time()
        # A network thread that ended put its on_disconnect on the queue first, unless an exception in a callback
        # ended it: then nothing would ever come again. Seen before the queue is read, so that a disconnect it
        # did report is taken first.
        client = self._client
        ended = client is not None and not loop_running(client)
        stop = self._handle(wait if max_wait is None else min(wait, max_wait))
        if ended and self._client is client and not stop:
            self._fail(f"the network thread of the connection to {self.settings.url} ended; connecting again")
        self._after_turn()
        return stop

    def _status_changed(self) -> bool:
        """True when the status must go out before its interval."""
        return False

    def _wait_time(self) -> float:
        now = self._clock()
        deadlines = [now + 1.0, *self._deadlines(now)]
        if self._client is None:
            deadlines.append(self._next_attempt)
        if self._connect_deadline is not None:
            deadlines.append(self._connect_deadline)
        if self._connected:
            deadlines.append(self._next_status)
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
            if self._on_item(item):
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
        self._after_handle(acked, stop)
        return stop

    def _local(self, item: tuple) -> None:
        """Requests from other stages (link thread)."""
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
        self._on_ack(mid, rc, text, acked)

    def _on_connack(self, rc: int, text: str) -> None:
        if rc >= FAILURE:
            self._fail(f"broker refused the connection: {text}")
            return
        self._connect_deadline = None
        self._connected = True
        self._backoff = 0.0
        self._on_link_up()
        self.connected_since = self._wall()
        self.connections += 1
        self.last_error = None
        self._log_connected()
        self._next_status = 0.0
        self._subscribe_all()

    def _log_connected(self) -> None:
        log.info("connected to %s", self.settings.url)

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

    def _status_payload(self, state: str, reason: str | None = None) -> str:
        payload: dict[str, Any] = {
            "state": state,
            "site": self.topics.site,
            "device": self.topics.device,
            "time": round(self._wall(), 3),
        }
        if reason:
            payload["reason"] = reason
        return json.dumps(payload, sort_keys=True)

    def _publish_status(self, state: str = "online", reason: str | None = None) -> int | None:
        payload = json.loads(self._status_payload(state, reason))
        self._status_fields(payload)
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
        self._on_link_down()
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
        self._stopped()


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
