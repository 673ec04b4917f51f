"""systemd service notifications (sd_notify): READY, WATCHDOG, STATUS, STOPPING.

Speaks the datagram protocol to ``$NOTIFY_SOCKET`` directly, so it works
with or without systemd-python and is a no-op when not run by systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET") or None
        if addr and addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        self._addr = addr
        self._sock: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        ok = usec and usec.isdigit() and (not pid or pid == str(os.getpid()))
        #: Seconds within which systemd expects WATCHDOG=1, or None.
        self.watchdog_interval: float | None = int(usec) / 1e6 if ok else None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, *fields: str) -> None:
        if not self._addr:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self._addr)
        except OSError as e:  # systemd gone: nothing to tell
            log.debug("sd_notify failed: %s", e)

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class KeepAlive:
    """Feeds systemd's watchdog from a thread, until stopped or for at most ``limit_s`` seconds.

    For a start-up that runs after READY=1 was sent: the daemon waited for a
    provisioning code first, so systemd's watchdog already runs while the main
    thread loads the models (seconds on a Pi, more than the watchdog's 30 s
    under emulation). A start-up that hangs longer than ``limit_s`` is still
    killed. Nothing is sent when systemd set no watchdog.
    """

    def __init__(self, notifier: Notifier, limit_s: float):
        self._notifier = notifier
        self._limit = limit_s
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "KeepAlive":
        interval = self._notifier.watchdog_interval
        if interval and self._thread is None:
            self._notifier.watchdog()
            self._thread = threading.Thread(target=self._feed, args=(interval / 3,), name="watchdog", daemon=True)
            self._thread.start()
        return self

    def _feed(self, every: float) -> None:
        deadline = time.monotonic() + self._limit
        while not self._done.wait(every):
            if time.monotonic() >= deadline:
                log.warning("start-up still running after %.0f s: the watchdog is no longer fed", self._limit)
                return
            self._notifier.watchdog()

    def stop(self) -> None:
        """Stop feeding. Safe to call twice."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
