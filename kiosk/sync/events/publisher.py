"""The publisher: copies the outbox to MQTT, in sequence order, at least once.

It drains the outbox over the door's broker connection
(:class:`kiosk.sync.link.BrokerLink`, which owns connecting, backoff,
subscriptions, the status and the last will). Each connection is a fresh
paho client with a clean start: whatever was in flight when a link died is
simply sent again from the outbox on the next connection (the back end drops
duplicates by event id). An event is marked delivered only when the broker's
PUBACK says a subscriber took it: "no matching subscribers" (reason 16: the
back end has not subscribed yet) leaves it undelivered and holds publishing
for a growing backoff (``[mqtt] require_subscriber``); a refusal (e.g. not
authorized) leaves it undelivered, raises an alarm, and the publisher
reconnects after the longest backoff. On stop, it goes on sending for up to
``[mqtt] stop_grace_s`` before it disconnects.

Topics: ``PREFIX/SITE/DEVICE/events`` (QoS 1, one sealed envelope each); the
retained ``…/status`` carries the outbox's and the publisher's counters.
"""

from __future__ import annotations

import logging
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
from ..link import BrokerLink
from ..mqtt import FAILURE, Topics
from .outbox import Outbox

log = logging.getLogger(__name__)

#: Seconds between purges of delivered events past their retention.
PURGE_INTERVAL = 600.0
#: Acknowledged events are marked delivered in one transaction per this many,
#: or after this many seconds: a crash in between only sends them again.
MARK_BATCH = 500
MARK_DELAY = 0.1
#: PUBACK reason code "no matching subscribers" (MQTT v5 §3.4.2.1).
NO_MATCHING_SUBSCRIBERS = 16


class Publisher(BrokerLink):
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
        self.device_keys = device_keys
        self.recipient = backend_public_key.public().encryption if isinstance(backend_public_key, PartyKeys) else backend_public_key
        if self.recipient.is_private:
            # Only the public half is needed; keep the private one out of this process's use.
            self.recipient = keymod.public_key(self.recipient)
        super().__init__(
            settings,
            Topics(settings.topic_prefix, outbox.site, outbox.device),
            f"kiosk-{outbox.site}-{outbox.device}",
            status_provider=status_provider,
            base_dir=base_dir,
            clock=clock,
            wall_clock=wall_clock,
        )
        self._wake_pending = threading.Event()
        # Publisher-thread state.
        self._inflight: OrderedDict[int, int] = OrderedDict()  # mid -> seq
        self._last_sent_seq = 0
        self._acked: list[int] = []  # acknowledged, not yet marked delivered
        self._mark_due = 0.0
        self._hold_until = 0.0  # no subscriber: no events sent before this
        self._hold_backoff = 0.0
        self._next_purge = 0.0
        self._last_alarm: str | None = None
        # Read by other threads (plain values, replaced whole).
        self.delivered = 0
        self.refused = 0
        self.peak_inflight = 0
        self.held: str | None = None  # why events are held back ("no_subscriber"), or None
        self.no_subscriber = 0

    @classmethod
    def from_config(cls, config: KioskConfig, outbox: Outbox, **kwargs) -> "Publisher":
        """Build from the config, loading and checking the key files.

        Raises :class:`~kiosk.errors.KeyFileError` for a key file that is
        missing, malformed or readable by others.
        """
        device, backend = load_device_keys(config)
        return cls(outbox, config.mqtt, device, backend, base_dir=config.device.state_dir, **kwargs)

    def __enter__(self) -> "Publisher":
        self.start()
        return self

    # -- what others may ask ------------------------------------------------

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

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the outbox has nothing undelivered; True if it got there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.depth() == 0:
                return True
            time.sleep(0.05)
        return self.outbox.depth() == 0

    # -- the link's hooks -----------------------------------------------------

    def _attach(self) -> None:
        self.outbox.add_listener(self._on_commit)

    def _detach(self) -> None:
        self.outbox.remove_listener(self._on_commit)

    def _on_commit(self, seq: int) -> None:
        """On the committing thread: wake the publisher thread once."""
        if not self._wake_pending.is_set():
            self._wake_pending.set()
            self._queue.put(("wake",))

    def _on_item(self, item: tuple) -> bool:
        if item[0] == "wake":
            self._wake_pending.clear()
            return True
        return False

    def _while_connected(self) -> None:
        self._fill_window()

    def _status_changed(self) -> bool:
        return self.outbox.alarm != self._last_alarm

    def _each_turn(self) -> None:
        if self._clock() >= self._next_purge:
            self._next_purge = self._clock() + PURGE_INTERVAL
            self.outbox.purge_delivered()

    def _after_turn(self) -> None:
        if self._acked and self._clock() >= self._mark_due:
            self._flush_marks()

    def _deadlines(self, now: float) -> list[float]:
        deadlines = [self._next_purge]
        if self._acked:
            deadlines.append(self._mark_due)
        if self._connected and self._hold_until > now:
            deadlines.append(self._hold_until)
        return deadlines

    def _after_handle(self, acked: list[int], stop: bool) -> None:
        if acked:
            self._acked.extend(acked)
        if self._acked and (len(self._acked) >= MARK_BATCH or self._clock() >= self._mark_due or stop):
            self._flush_marks()

    def _flush_marks(self) -> None:
        """Mark the acknowledged events delivered, in one transaction."""
        acked, self._acked = self._acked, []
        self._mark_due = self._clock() + MARK_DELAY
        if acked:
            self.delivered += self.outbox.mark_delivered_many(acked)

    def _on_ack(self, mid: int, rc: int, text: str, acked: list[int]) -> None:
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

    def _on_link_up(self) -> None:
        self._last_sent_seq = 0  # resend everything undelivered, oldest first
        self._inflight.clear()

    def _log_connected(self) -> None:
        log.info("connected to %s; %d events to send", self.settings.url, self.outbox.depth())

    def _on_link_down(self) -> None:
        self._inflight.clear()

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

    def _status_fields(self, payload: dict[str, Any]) -> None:
        stats = self.outbox.stats()
        self._last_alarm = stats["alarm"]
        payload["outbox"] = stats
        payload["publisher"] = {"delivered": self.delivered, "refused": self.refused, "last_error": self.last_error,
                                "held": self.held}

    def _drain(self) -> None:
        """On stop: go on sending undelivered events for up to ``stop_grace_s``."""
        deadline = self._clock() + self.settings.stop_grace_s
        while self._clock() < deadline:
            if self._client is None or self._hold_until > self._clock():
                return  # not connected (not even connecting), or nobody subscribed
            if self._connected and not self._inflight and self.outbox.depth() == 0:
                return
            self._step(max_wait=min(0.05, max(0.0, deadline - self._clock())))

    def _stopped(self) -> None:
        log.info("publisher stopped; %d events undelivered", self.outbox.depth())
