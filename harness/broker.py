"""A real Mosquitto for tests: test CA, TLS with client certificates, an ACL.

Fixtures (made available to every test by ``tests/conftest.py``):

- ``broker_pki``: a throw-away CA with a server certificate for 127.0.0.1
  and ``client(cn)`` to mint client certificates (the CN is the MQTT user);
- ``broker``: a started :class:`Broker` on an ephemeral loopback port with
  its own config, persistence and ACL; stopped by PID at teardown;
- ``mqtt_settings``: ``mqtt_settings(cn, **overrides)`` gives an
  :class:`~kiosk.config.MqttSettings` pointing at ``broker`` with a
  certificate for ``cn``;
- ``mqtt_probe``: ``mqtt_probe(cn)`` gives a connected :class:`MqttProbe`
  (a recording paho client: publish and get the PUBACK code, read retained
  messages), closed at teardown.

:class:`TcpProxy` sits between a client and the broker and cuts the link.

The default ACL is the one ``docs/broker.md`` prints (read from the page,
verbatim): a door (certificate CN ``SITE/DEVICE``: :func:`device_cn`) writes
only ``kiosk/SITE/DEVICE/events``, ``…/status`` and ``…/ack``, and reads its
own ``…/gallery/#`` and the sites' ``kiosk/<site>/gallery``; the user
``backend`` reads everything under ``kiosk/`` and writes gallery updates;
the user ``console`` (``kiosk-console``) writes gallery updates and reads
only the doors' status and acks.
Pass ``acl=`` to :class:`Broker` for others. :meth:`Broker.from_docs` starts
Mosquitto with the page's ``mosquitto.conf`` too.

Nothing here needs pytest except the fixtures at the bottom, so scripts
(the outbox benchmark) use :class:`Broker` too.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .docs import docs_snippet

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

#: The ACL of docs/broker.md, verbatim.
DEFAULT_ACL = docs_snippet("broker-acl")


def device_cn(site: str, device: str) -> str:
    """A door's broker identity: the common name of its client certificate."""
    return f"{site}/{device}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- PKI ----------------------------------------------------------------------


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _cert(subject_cn: str, issuer_name, issuer_key, public_key, *, ca: bool, server: bool = False,
          addresses: tuple[str, ...] = (), names: tuple[str, ...] = ()):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), *(x509.DNSName(n) for n in names),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.IPAddress(ipaddress.ip_address("::1")),
                                         *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses)]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """A test CA in ``root`` with a server certificate and client certificates on demand.

    The server certificate is good for localhost, 127.0.0.1, ::1, any
    further IP ``server_addresses`` (a virtual machine reaches the broker
    at another address) and DNS ``server_names`` (a PostgreSQL server
    reached by a name, as ``db.test``).
    """

    def __init__(self, root: Path, name: str = "Kiosk Test CA", server_addresses: tuple[str, ...] = (),
                 server_names: tuple[str, ...] = ()):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_cert = _cert(name, None, self._ca_key, self._ca_key.public_key(), ca=True)
        self.ca_file = self.root / "ca.pem"
        self.ca_file.write_bytes(self._ca_cert.public_bytes(serialization.Encoding.PEM))
        self._server_addresses = tuple(server_addresses)
        self._server_names = tuple(server_names)
        self.server_cert, self.server_key = self._issue("server", "127.0.0.1", server=True)
        self._lock = threading.Lock()

    def _issue(self, stem: str, cn: str, *, server: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, self._ca_cert.subject, self._ca_key, key.public_key(), ca=False, server=server,
                     addresses=self._server_addresses if server else (),
                     names=self._server_names if server else ())
        cert_path, key_path = self.root / f"{stem}.pem", self.root / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path

    def client(self, cn: str) -> tuple[Path, Path]:
        """(certificate, key) for an MQTT client whose identity is ``cn`` (made once)."""
        stem = "client-" + cn.replace("/", "~")  # a door's CN is SITE/DEVICE
        with self._lock:
            cert, key = self.root / f"{stem}.pem", self.root / f"{stem}.key"
            if cert.exists():
                return cert, key
            return self._issue(stem, cn)


# -- Mosquitto ----------------------------------------------------------------


class Broker:
    """One Mosquitto process with its own config, on a loopback port; stopped by PID."""

    def __init__(self, workdir: Path, pki: Pki, *, port: int | None = None, acl: str = DEFAULT_ACL, extra_conf: str = "",
                 host: str = "127.0.0.1", conf: str | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.host = host  # "::1" for IPv6 loopback
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "mosquitto.log"
        self.acl_path = self.dir / "acl"
        self.acl_path.write_text(acl)
        self.conf_path = self.dir / "mosquitto.conf"
        (self.dir / "data").mkdir(exist_ok=True)
        if conf is not None:
            self.conf_path.write_text(conf)
            return
        self.conf_path.write_text(
            f"""\
# Written by harness/broker.py.
# As root, Mosquitto switches to user mosquitto before reading the TLS keys
# (0600, ours): stay root.
user root
per_listener_settings false
allow_anonymous false
persistence true
persistence_location {self.dir / 'data'}/
autosave_interval 1
log_dest file {self.log_path}
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
connection_messages true
log_timestamp_format %H:%M:%S
acl_file {self.acl_path}
max_queued_messages 100000

listener {self.port} {self.host}
protocol mqtt
cafile {pki.ca_file}
certfile {pki.server_cert}
keyfile {pki.server_key}
require_certificate true
use_identity_as_username true
{extra_conf}
"""
        )

    @classmethod
    def from_docs(cls, pki: Pki, *, port: int | None = None) -> "Broker":
        """Mosquitto with docs/broker.md's mosquitto.conf and ACL, verbatim but for where things are.

        The page's ``/etc/mosquitto/`` and ``/var/lib/mosquitto/`` become
        folders of this broker (in a fresh folder under /tmp, which the
        ``mosquitto`` user can reach), its port a free one on 127.0.0.1, and
        a log file is added. Run as root, Mosquitto drops to the page's
        ``user`` (``mosquitto``), so the server key and folders are handed to
        it. Remove ``broker.dir`` when done.
        """
        import pwd
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="kiosk-mosquitto-"))
        etc, data = workdir / "etc", workdir / "data"
        etc.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        for src, name in ((pki.ca_file, "ca.pem"), (pki.server_cert, "server.pem"), (pki.server_key, "server.key")):
            shutil.copy(src, etc / name)
        (etc / "server.key").chmod(0o600)
        (etc / "acl").write_text(docs_snippet("broker-acl"))
        conf = (docs_snippet("broker-mosquitto-conf")
                .replace("/etc/mosquitto/", f"{etc}/").replace("/var/lib/mosquitto/", f"{data}/")
                .replace("listener 8883", f"listener {port} 127.0.0.1"))
        log = workdir / "mosquitto.log"
        log.touch()
        conf += f"\n# Added by harness/broker.py\nlog_dest file {log}\nlog_type all\nconnection_messages true\n"
        if os.geteuid() == 0:
            pw = pwd.getpwnam("mosquitto")
            for p in (workdir, etc, data, log, *etc.iterdir()):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            workdir.chmod(0o755)
        b = cls(workdir, pki, port=port, conf=conf)
        b.acl_path = etc / "acl"
        return b

    def device_cn(self, site: str, device: str) -> str:
        return device_cn(site, device)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtts://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> "Broker":
        if self.running():
            return self
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}\n{self.log_tail()}")
            if self.log_path.exists():
                with open(self.log_path, "rb") as f:
                    f.seek(mark)
                    if b" running" in f.read():
                        return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not start within {timeout}s\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID (Mosquitto saves its persistence file), then wait."""
        if not self.running():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap()

    def kill(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def restart(self) -> "Broker":
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def settings(self, cn: str, **overrides):
        """MqttSettings for a client of this broker whose certificate CN is ``cn``."""
        from kiosk.config import MqttSettings

        cert, key = self.pki.client(cn)
        values = dict(
            enabled=True,
            url=self.url,
            ca_file=self.pki.ca_file,
            client_cert=cert,
            client_key=key,
            keepalive=5,
            connect_timeout=3.0,
            reconnect_backoff_initial=0.1,
            reconnect_backoff_max=1.0,
            status_interval=60.0,
        )
        values.update(overrides)
        return MqttSettings(**values)


# -- A plain client for tests -------------------------------------------------


class MqttProbe:
    """A paho client that records what happens, for driving and inspecting a broker.

    ``connack`` is the CONNACK reason code (None if none came), ``messages``
    lists ``(topic, payload, retain)`` in arrival order.
    """

    def __init__(self, broker: Broker, cn: str | None, *, client_id: str | None = None, timeout: float = 5.0):
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{cn}-{os.getpid()}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        if cn is None:  # TLS without a client certificate
            self.client.tls_set(ca_certs=str(broker.pki.ca_file))
        else:
            cert, key = broker.pki.client(cn)
            self.client.tls_set(ca_certs=str(broker.pki.ca_file), certfile=str(cert), keyfile=str(key))
        self.connack: int | None = None
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes, bool]] = []
        self._acks: dict[int, int] = {}
        self._subacks: dict[int, list[int]] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        try:
            self.client.connect(broker.host, broker.port, 5)
        except OSError:
            self.disconnected.set()
            return
        self.client.loop_start()
        self._wait(lambda: self.connack is not None or self.disconnected.is_set(), timeout)

    def _on_connect(self, c, u, flags, rc, props):
        with self._cond:
            self.connack = int(rc.value)
            self._cond.notify_all()

    def _on_publish(self, c, u, mid, rc, props):
        with self._cond:
            self._acks[mid] = int(rc.value)
            self._cond.notify_all()

    def _on_subscribe(self, c, u, mid, rcs, props):
        with self._cond:
            self._subacks[mid] = [int(r.value) for r in rcs]
            self._cond.notify_all()

    def _on_message(self, c, u, msg):
        with self._cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self._cond.notify_all()

    def _wait(self, pred, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(pred, timeout)

    @property
    def connected(self) -> bool:
        return self.connack == 0 and not self.disconnected.is_set()

    def publish(self, topic: str, payload, *, qos: int = 1, retain: bool = False, timeout: float = 5.0) -> int | None:
        """Publish and return the PUBACK reason code (None if none came)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        self._wait(lambda: info.mid in self._acks, timeout)
        return self._acks.get(info.mid)

    def subscribe(self, topic: str, *, qos: int = 1, timeout: float = 5.0) -> list[int] | None:
        _, mid = self.client.subscribe(topic, qos=qos)
        self._wait(lambda: mid in self._subacks, timeout)
        return self._subacks.get(mid)

    def wait_messages(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, bool]]:
        self._wait(lambda: len(self.messages) >= n, timeout)
        with self._cond:
            return list(self.messages)

    def retained(self, topic: str, timeout: float = 5.0):
        """The JSON of the retained message on ``topic`` (subscribing to get it)."""
        import json

        self.subscribe(topic)
        self._wait(lambda: any(t == topic for t, _, _ in self.messages), timeout)
        with self._cond:
            hits = [p for t, p, _ in self.messages if t == topic]
        return json.loads(hits[-1]) if hits else None

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


# -- Network faults -----------------------------------------------------------


class TcpProxy:
    """A loopback TCP forwarder whose links can be cut (reset) and blocked.

    ``cut()`` closes every open connection at once (as a dead link that the
    peers notice); ``block()`` also refuses new ones until ``restore()``.
    """

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._blocked = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = False
        self.bytes_forwarded = 0
        self.connections = 0
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop:
            r, _, _ = select.select([self._listener], [], [], 0.1)
            if not r:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), name="tcp-proxy-pump", daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        socks = [a, b]
        try:
            while not self._stop:
                r, _, _ = select.select(socks, [], [], 0.1)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
                    self.bytes_forwarded += len(data)
        except (OSError, ValueError):  # the socket was cut under us
            return
        finally:
            for s in socks:
                _close(s)

    def cut(self) -> int:
        """Reset every open connection; returns how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                _close(s, reset=True)
        return len(pairs)

    def block(self) -> None:
        self._blocked = True
        self.cut()

    def restore(self) -> None:
        self._blocked = False

    def close(self) -> None:
        self._stop = True
        self.cut()
        _close(self._listener)
        self._thread.join(2)


def _close(s: socket.socket, reset: bool = False) -> None:
    try:
        if reset:
            # SO_LINGER 0: close sends RST, like a link that died.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    except OSError:
        pass


# -- fixtures -----------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - scripts without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def broker_pki(tmp_path_factory) -> Pki:
        """A throw-away CA; ``broker_pki.client(cn)`` makes client certificates."""
        return Pki(tmp_path_factory.mktemp("pki"))

    @pytest.fixture
    def broker(tmp_path, broker_pki):
        """A started Mosquitto (TLS, client certificates required, default ACL)."""
        if not os.path.exists(MOSQUITTO):
            pytest.fail("mosquitto is not installed (scripts/bootstrap installs it)")
        b = Broker(tmp_path / "mosquitto", broker_pki)
        b.start()
        yield b
        b.kill()

    @pytest.fixture
    def mqtt_settings(broker):
        """``mqtt_settings(cn, **overrides)``: MqttSettings for ``broker`` as client ``cn``."""
        return broker.settings

    @pytest.fixture
    def mqtt_probe(broker):
        """``mqtt_probe(cn)``: a connected :class:`MqttProbe` as client ``cn`` (None: no certificate)."""
        made: list[MqttProbe] = []

        def make(cn: str | None, **kw) -> MqttProbe:
            p = MqttProbe(broker, cn, **kw)
            made.append(p)
            return p

        yield make
        for p in made:
            p.close()
