"""``kiosk-ingest``: the back-end service that stores every verified event, once.

It is the reference consumer (:class:`~kiosk.backend.consumer.EventConsumer`:
the same subscription, verification and decryption) with a sink that
stores: each batch of checked messages goes into the store in one
transaction (events idempotently on (site, device, event id), refusals in
their own table), and only then are the batch's messages acknowledged to
the broker (paho's manual PUBACK). A crash at any point loses nothing (the
broker sends what was not acknowledged again, to the same persistent
session) and duplicates nothing (the store keeps one row per event).

A store that cannot be reached (PostgreSQL restarted) is retried with
backoff and nothing is acknowledged meanwhile; a lost broker is reconnected
by paho. Events older than ``[store] retention_days`` are deleted every
``purge_interval_s``. Under systemd it says READY=1 once subscribed, sends
watchdog keep-alives while its consumer thread lives, and re-reads the
doors' keys on SIGHUP.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..cliopts import INGEST_CONFIG_ENV, INGEST_CONFIG_PATH, add_common_options, default_config, validate_target
from ..errors import BrokerUnavailable, ConfigError, KeyFileError, KioskError, StoreUnavailable
from ..logs import setup_logging
from ..notify import Notifier
from ..sync import keys as keymod
from .consumer import Event, EventConsumer, Invalid, retry_until_stopped
from .freshness import FreshnessRules, flags_for
from ..sync.mqtt import tls_files
from .config import IngestConfig, load_ingest_config
from .health import Health, check_health, write_health
from .pgurl import check_store_url
from .store import Incoming, Refusal, Store, is_postgres_url, open_store

log = logging.getLogger(__name__)

#: Seconds between the service's checks (status, health file, watchdog) at most.
BEAT_S = 10.0
#: A health file older than this means the service is not running.
HEALTH_MAX_AGE_S = 3 * BEAT_S + 5


class StoreSink:
    """Stores each batch (events and refusals) in one transaction; the consumer acknowledges after it."""

    def __init__(self, store: Store, rules: FreshnessRules = FreshnessRules(), *, retention_s: float | None = None):
        self.store = store
        self.rules = rules
        self.retention_s = retention_s
        self.stored = 0
        self.duplicates = 0
        self.flagged = 0
        self.refused = 0
        self.erased = 0
        self.past_retention = 0
        self.proposals_refused = 0

    @staticmethod
    def transient(error: BaseException) -> bool:
        """A store that cannot be reached is waited for; any other failure is some message's fault."""
        return isinstance(error, StoreUnavailable)

    def _flag(self, claims, received_at, last_seq) -> tuple[str, ...]:
        return flags_for(claims, received_at, last_seq, self.rules)

    def take(self, events: Sequence[Event], invalid: Sequence[Invalid]) -> None:
        result = self.store.store_batch(
            [Incoming(e.claims, e.received_at, e.topic, e.payload_bytes, e.payload_sha256) for e in events],
            [Refusal(topic=i.topic, reason=i.reason, detail=i.detail, received_at=i.received_at,
                     payload_bytes=i.payload_bytes, payload_sha256=i.payload_sha256) for i in invalid],
            flag=self._flag, retention_s=self.retention_s, max_clock_ahead_s=self.rules.max_clock_ahead_s,
        )
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.flagged += result.flagged
        self.refused += result.refused
        self.erased += result.erased
        self.past_retention += result.past_retention
        for inv in invalid:
            log.warning("refused a message on %s: %s", inv.topic, inv.reason)
        if result.erased or result.past_retention:
            log.info("not stored again: %d erased, %d past retention", result.erased, result.past_retention)
        if result.proposals_refused:
            self.proposals_refused += len(result.proposals_refused)
            log.warning("%d proposal(s) not filed: %s", len(result.proposals_refused),
                        ", ".join(sorted(set(result.proposals_refused))))


def load_devices(path: Path) -> keymod.KeyRing:
    """The doors' public keys: every ``*.pub.jwks`` in a folder, or one file.

    Two different keys for one door are refused (:class:`KeyFileError`).
    """
    if path.is_dir():
        files = sorted(path.glob("*.pub.jwks"))
        ring = keymod.KeyRing.from_files(files)
    elif path.exists():
        ring = keymod.KeyRing.from_files([path])
    else:
        raise KeyFileError(f"{path}: no such folder or file of device public keys")
    return ring


def devices_signature(path: Path) -> tuple:
    """What changes when a door's key file is added, removed or replaced (names, sizes, times)."""
    try:
        files = sorted(path.glob("*.pub.jwks")) if path.is_dir() else [path]
        return tuple((f.name, st.st_size, st.st_mtime_ns, st.st_ino) for f in files for st in [f.stat()])
    except OSError:
        return ()


class Ingest:
    """The service: a store, and a consumer that stores into it (see the module docstring)."""

    def __init__(self, config: IngestConfig, *, store: Store | None = None):
        self.config = config
        self.backend = keymod.load_private(config.path(config.keys.backend_key))
        self.devices_path = config.path(config.keys.devices)
        self._devices_seen = devices_signature(self.devices_path)
        self.devices = load_devices(self.devices_path)
        self.mqtt = config.broker.mqtt()
        self.tls = tls_files(self.mqtt, config.ingest.state_dir)
        if is_postgres_url(config.store_url):
            check_store_url(config.store_url, "[store] url")
        self.store = store
        self.sink: StoreSink | None = None
        self.consumer: EventConsumer | None = None
        self._stop = threading.Event()
        self._next_purge = 0.0

    def _retry(self, kinds: tuple[type[BaseException], ...], what: str, fn, *args):
        """``fn(*args)`` until it works or the service stops (backoff up to ``reconnect_backoff_max``)."""
        return retry_until_stopped(self._stop, fn, *args, errors=kinds, first=0.5,
                                   ceiling=self.config.broker.reconnect_backoff_max,
                                   on_fail=lambda e: log.warning("%s: %s; trying again", what, e))

    def start(self) -> None:
        """Open the store and subscribe, each retried until it works (or :meth:`stop`)."""
        if self.store is None:
            self.store = self._retry((StoreUnavailable,), "store unavailable", open_store, self.config.store_url)
        log.info("storing events in %s (schema version %d)", self.store.describe(), self.store.schema_version())
        self.sink = StoreSink(self.store, self.config.ingest.rules(),
                              retention_s=self.config.store.retention_days * 86400)
        self._retry((BrokerUnavailable,), "broker unavailable", self._subscribe)

    def _subscribe(self) -> None:
        b = self.config.broker
        consumer = EventConsumer(
            self.mqtt, self.tls, self.backend, self.devices, sink=self.sink, client_id=b.client_id,
            share_group=b.share_group or None, session_expiry=b.session_expiry_s,
            receive_maximum=b.receive_maximum, batch_max=self.config.ingest.batch_max,
            reload_devices=lambda: load_devices(self.devices_path),
        )
        consumer.start()
        self.consumer = consumer

    def reload_devices(self) -> None:
        """Read the doors' keys again (SIGHUP, or the folder changed); on an error keep the keys in use."""
        self._devices_seen = devices_signature(self.devices_path)
        ring = load_devices(self.devices_path)
        self.devices = ring
        if self.consumer is not None:
            self.consumer.devices = ring
        log.info("device keys read again: %d doors", len(ring.owners))

    def devices_changed(self) -> bool:
        """A door's key file was added, removed or replaced since the keys were last read."""
        return devices_signature(self.devices_path) != self._devices_seen

    def health(self) -> Health:
        c, s = self.consumer, self.sink
        stalled = c.stalled_for() if c else 0.0
        state = "starting" if c is None else ("stalled" if stalled > self.config.ingest.stall_after_s else "ok")
        return Health(state=state, checked_at=time.time(), pid=os.getpid(), stalled_for_s=round(stalled, 1),
                      last_error=c.last_error if c else None, stored=s.stored if s else 0,
                      refused=(s.refused + s.duplicates + s.erased + s.past_retention) if s else 0,
                      unstorable=c.unstorable if c else 0)

    def purge_if_due(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self.config.store.purge_interval_s
        try:
            events, refused = self.store.purge(self.config.store.retention_days * 86400)
        except KioskError as e:
            log.warning("could not delete events past retention: %s", e)
            self._next_purge = time.monotonic() + 60
            return
        if events or refused:
            log.info("deleted %d events and %d refusals past the %g-day retention", events, refused,
                     self.config.store.retention_days)

    def alive(self) -> bool:
        """The consumer's thread and paho's network thread both run (either ended: exit, for systemd to restart)."""
        c = self.consumer
        t = c._thread if c else None
        return t is not None and t.is_alive() and c.network_alive()

    def status(self) -> str:
        s, c = self.sink, self.consumer
        if not s:
            return "starting"
        line = (f"{s.stored} events stored, {s.duplicates} duplicates, {s.refused} refused, {s.flagged} flagged, "
                f"{s.erased} erased, {s.past_retention} past retention, {c.unstorable if c else 0} unstorable")
        health = self.health()
        return line if health.state != "stalled" else f"{health.line()}; {line}"

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self.consumer is not None:
            self.consumer.close()
        if self.store is not None:
            self.store.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kiosk-ingest",
        description="The back end: subscribe to the kiosks' events, verify and decrypt them as kiosk-admin "
        "events does, store each one once (SQLite or PostgreSQL) before acknowledging it, keep refused "
        "messages in their own table, and delete what is past the retention period. Runs until SIGTERM; "
        "SIGHUP re-reads the doors' public keys.",
    )
    add_common_options(p, config_help=f"settings (default: ${INGEST_CONFIG_ENV}, else {INGEST_CONFIG_PATH}; "
                       "every key is documented in config/ingest.toml)")
    p.add_argument("--health", action="store_true",
                   help="say whether the running service is storing (from the health file in its state folder): "
                   "exit 0 when it is, 1 when it is stalled or not running")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The back end cannot run on built-in defaults: without a file, /etc/kiosk/ingest.toml (and its error).
    args.config = default_config(args.config, env=INGEST_CONFIG_ENV, system=INGEST_CONFIG_PATH) or str(
        INGEST_CONFIG_PATH)
    if args.validate_config:
        args.config = validate_target(args)
    if args.health:
        try:
            config = load_ingest_config(args.config)
        except ConfigError as e:
            print(f"kiosk-ingest: {e}", file=sys.stderr)
            return ConfigError.exit_status
        ok, line = check_health(config.ingest.state_dir, max_age_s=HEALTH_MAX_AGE_S)
        print(f"kiosk-ingest: {line}")
        return 0 if ok else 1
    try:
        config = load_ingest_config(args.config)
        setup_logging(config.logging.level, journald=config.logging.journald and not args.validate_config)
        service = Ingest(config)  # reads and checks the key and TLS files
    except (ConfigError, KeyFileError) as e:
        print(f"kiosk-ingest: {e}", file=sys.stderr)
        return ConfigError.exit_status
    if args.validate_config:
        print(f"{args.config}: OK")
        return 0
    return _serve(service)


def _serve(service: Ingest) -> int:
    notifier = Notifier()
    threading.current_thread().name = "ingest"
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    hup = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: hup.set())
    try:
        service.start()
        if service._stop.is_set():
            return 0
        notifier.ready(f"subscribed; storing in {service.store.describe()}")
        log.info("ingest running")
        service.purge_if_due()
        beat = min(BEAT_S, (notifier.watchdog_interval or 30.0) / 3)
        was_ok = True
        while not service._stop.wait(beat):
            if hup.is_set() or service.devices_changed():
                hup.clear()
                try:
                    service.reload_devices()
                except KioskError as e:
                    log.error("could not read the device keys again (the keys read before stay in use): %s", e)
                except Exception as e:  # noqa: BLE001 - a bug in reading them must not stop every door
                    log.error("could not read the device keys again (%s); the keys read before stay in use",
                              type(e).__name__)
            if not service.alive():
                log.error("the consumer or its network thread ended; exiting for systemd to restart")
                return 1
            service.purge_if_due()
            health = service.health()
            notifier.status(service.status())
            write_health(service.config.ingest.state_dir, health)
            # Fed only while messages move: a consumer stuck on a batch is restarted by systemd.
            if health.state != "stalled":
                notifier.watchdog()
            if was_ok and health.state == "stalled":
                log.error("stalled: nothing stored or acknowledged for %.0f s (%s); the watchdog is no longer fed",
                          health.stalled_for_s, health.last_error or "no error")
            elif not was_ok and health.state != "stalled":
                log.info("storing again")
            was_ok = health.state != "stalled"
    except KioskError as e:
        if service._stop.is_set():
            return 0  # stopped while still starting
        log.error("%s", e)
        return 1
    finally:
        notifier.stopping()
        service.close()
        log.info("ingest stopped: %s", service.status())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
