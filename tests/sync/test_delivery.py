"""Delivery that means delivered: PUBACK "no matching subscribers" keeps events; a stop sends what it can.

Against a real Mosquitto (harness/broker.py): events published before any
back end has subscribed are answered with reason 16 and must stay in the
outbox until a consumer with a persistent session exists.
"""

from __future__ import annotations

import json
import time

import pytest

from kiosk.sync import keys as keymod
from kiosk.backend.consumer import EventConsumer
from kiosk.sync.events.publisher import Publisher
from kiosk.sync.mqtt import tls_files
from outbox_kit import CN, DEVICE, SITE, decision, outbox, wait_for  # noqa: F401


def consumer(broker, backend_keys, device_keys, events: list, **kw) -> EventConsumer:
    settings = broker.settings("backend")
    return EventConsumer(settings, tls_files(settings), backend_keys, keymod.KeyRing([device_keys]),
                         on_event=events.append, client_id="test-backend-1", session_expiry=300, **kw)


def test_events_wait_for_the_first_subscriber_and_all_arrive_once(broker, outbox, device_keys, backend_keys,
                                                                  mqtt_probe):
    settings = broker.settings(CN, reconnect_backoff_initial=0.2, reconnect_backoff_max=1.0, status_interval=60)
    committed = [outbox.commit(decision(i)).event_id for i in range(100)]
    with Publisher(outbox, settings, device_keys, backend_keys.public()) as pub:
        # Nobody has subscribed: the broker answers "no matching subscribers" and nothing counts as delivered.
        assert wait_for(lambda: pub.held == "no_subscriber")
        watcher = mqtt_probe("backend")
        watcher.subscribe(f"kiosk/{SITE}/{DEVICE}/status")
        assert wait_for(lambda: any(json.loads(p)["publisher"]["held"] == "no_subscriber"
                                    for _, p, _ in list(watcher.messages)), timeout=5)
        time.sleep(1.5)  # several back-off rounds
        assert outbox.depth() == 100 and pub.delivered == 0 and pub.no_subscriber >= 2
        # The back end subscribes for the first time, with a persistent session.
        events: list = []
        with consumer(broker, backend_keys, device_keys, events):
            assert wait_for(lambda: outbox.depth() == 0, timeout=15)
            assert wait_for(lambda: len(events) >= 100)
            time.sleep(0.3)
        assert pub.held is None
    ids = [e.claims["event_id"] for e in events]
    assert sorted(ids) == sorted(committed) and len(ids) == len(set(ids))


def test_once_subscribed_the_broker_queues_for_an_absent_back_end(broker, outbox, device_keys, backend_keys):
    events: list = []
    with consumer(broker, backend_keys, device_keys, events):
        pass  # subscribed once; the session (and its subscription) outlives the connection
    with Publisher(outbox, broker.settings(CN), device_keys, backend_keys.public()) as pub:
        for i in range(20):
            outbox.commit(decision(i))
        assert wait_for(lambda: outbox.depth() == 0)
        assert pub.held is None and pub.no_subscriber == 0
    with consumer(broker, backend_keys, device_keys, events):
        assert wait_for(lambda: len(events) == 20)


def test_require_subscriber_false_counts_any_accepted_puback(broker, outbox, device_keys, backend_keys):
    settings = broker.settings(CN, require_subscriber=False)
    with Publisher(outbox, settings, device_keys, backend_keys.public()) as pub:
        for i in range(5):
            outbox.commit(decision(i))
        assert wait_for(lambda: outbox.depth() == 0)
        assert pub.held is None and pub.delivered == 5


def test_stop_sends_what_it_can_within_the_grace_period(broker, outbox, device_keys, backend_keys):
    """A file run's last decisions come just before the stop: they go out, not on the next start."""
    events: list = []
    with consumer(broker, backend_keys, device_keys, events):
        pub = Publisher(outbox, broker.settings(CN, inflight=5, stop_grace_s=5.0), device_keys,
                        backend_keys.public())
        pub.start()
        assert wait_for(lambda: pub.connected)
        for i in range(40):
            outbox.commit(decision(i))
        assert pub.stop()  # at once: the commits' wake-ups and the stop arrive together
        pub.close()
        assert outbox.depth() == 0
        assert wait_for(lambda: len(events) == 40)


def test_stop_grace_is_bounded_when_nobody_takes_the_events(broker, outbox, device_keys, backend_keys):
    pub = Publisher(outbox, broker.settings(CN, stop_grace_s=2.0, reconnect_backoff_initial=5.0,
                                           reconnect_backoff_max=10.0),
                    device_keys, backend_keys.public())
    pub.start()
    assert wait_for(lambda: pub.connected)
    for i in range(10):
        outbox.commit(decision(i))
    assert wait_for(lambda: pub.held == "no_subscriber")
    t0 = time.monotonic()
    assert pub.stop()
    pub.close()
    assert time.monotonic() - t0 < 7.0  # the 2 s grace, a disconnect and the threads' joins on a busy machine
    assert outbox.depth() == 10  # kept for the next start
