"""MQTT plumbing shared by the publisher and the reference consumer.

Topics, and paho clients set up the one way we use them: MQTT v5, TLS with
a CA file and a client certificate (the broker takes its common name as the
client's identity), no automatic reconnect: the caller owns reconnecting.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from ..config import MqttSettings
from ..errors import ConfigError
from ..keyfile import check_private, credential_path

log = logging.getLogger(__name__)
#: paho's report of an exception raised in one of our callbacks (which then ends its network thread). Its other
#: messages stay out: the per-packet trace, and socket errors that the link and the consumer report themselves.
paho_log = logging.getLogger("kiosk.mqtt.paho")
paho_log.setLevel(logging.ERROR)


def _callback_exceptions_only(record: logging.LogRecord) -> bool:
    """Pass paho's "Caught exception in on_x: %s" only, with the exception's type instead of its text (which may
    quote what it failed on)."""
    if not str(record.msg).startswith("Caught exception in "):
        return False
    record.args = tuple(type(a).__name__ if isinstance(a, BaseException) else a for a in record.args or ())
    return True


paho_log.addFilter(_callback_exceptions_only)

#: Reason codes from 0x80 up are failures (MQTT v5 §2.4).
FAILURE = 0x80


@dataclass(frozen=True)
class Topics:
    """The topics of one device: ``PREFIX/SITE/DEVICE/…``."""

    prefix: str
    site: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.device}"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def status(self) -> str:
        return f"{self.base}/status"


def parse_event_topic(topic: str, prefix: str) -> tuple[str, str] | None:
    """(site, device) of ``PREFIX/SITE/DEVICE/events``, or None."""
    if not topic.startswith(prefix + "/"):
        return None
    rest = topic[len(prefix) + 1 :].split("/")
    if len(rest) != 3 or rest[2] != "events" or not rest[0] or not rest[1]:
        return None
    return rest[0], rest[1]


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    client_cert: Path
    client_key: Path


def tls_files(settings: MqttSettings, base: Path | None = None) -> TlsFiles | None:
    """The TLS files a client needs, found and checked; None for plain mqtt://.

    Relative names are looked up in ``$CREDENTIALS_DIRECTORY`` first, then
    under ``base`` (the state directory). The client key must be 0600.
    """
    if not settings.tls:
        return None

    def find(p: Path) -> Path:
        found = credential_path(p)
        if not found.is_absolute() and base is not None:
            found = base / found
        return found

    files = TlsFiles(find(settings.ca_file), find(settings.client_cert), find(settings.client_key))
    for name, path in (("ca_file", files.ca_file), ("client_cert", files.client_cert)):
        if not path.is_file():
            raise ConfigError(f"mqtt.{name}: {path} does not exist")
    check_private(files.client_key)
    return files


def new_client(
    settings: MqttSettings, client_id: str, tls: TlsFiles | None, *, reconnect: bool = False, manual_ack: bool = False
) -> mqtt.Client:
    """A paho client (MQTT v5, TLS); by default for one connection, without automatic reconnect."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=reconnect,
        manual_ack=manual_ack,
    )
    client.connect_timeout = settings.connect_timeout
    client.enable_logger(paho_log)
    if tls is not None:
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file),
                certfile=str(tls.client_cert),
                keyfile=str(tls.client_key),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"mqtt: cannot load TLS files: {e}") from e
    return client


def topic_of(msg: mqtt.MQTTMessage) -> str:
    """A message's topic as text. MQTT wants UTF-8 and Mosquitto checks it, but a broker or bridge that does not
    would otherwise raise out of ``msg.topic`` (and out of paho's network thread): bytes that do not decode are
    kept as ``\\x..`` escapes, which match no topic of ours."""
    try:
        return msg.topic
    except UnicodeDecodeError:
        return bytes(msg._topic).decode("utf-8", "backslashreplace")


def loop_running(client: mqtt.Client) -> bool:
    """Whether the client's network thread (``loop_start``) still runs.

    An exception raised in a callback ends that thread and says nothing else: no on_disconnect, no reconnect, no
    more messages. paho offers no public way to ask, hence its ``_thread``.
    """
    if not hasattr(client, "_thread"):  # a paho of another make: cannot tell, so never a false alarm
        return True
    thread = client._thread
    return thread is not None and thread.is_alive()


def reason_value(rc) -> int:
    """The numeric value of a paho reason code (or of a plain int)."""
    return int(getattr(rc, "value", rc))


def force_close(client: mqtt.Client) -> None:
    """Shut a client's socket down under it, so that its network loop ends.

    Used when a polite DISCONNECT cannot get through (a dead link). The
    plain-socket shutdown sidesteps the TLS layer the loop may be using.
    """
    sock = client.socket()
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass
