"""The device's provisioning state: taking a code, keeping it, applying it, resetting it.

Everything a provisioning code brings lives in one folder
(``provisioning.directory`` under the state dir)::

    bundle.jws          the code itself, re-verified against the root key at every start
    backend.pub.jwks    the back end's public keys (events are encrypted to it; it signs QR credentials)
    admin.pub.jwks      the admins' public keys (gallery updates are signed by them)
    device.jwks         this device's key pair, made at provisioning (0600)
    device.pub.jwks     its public half, for the back end
    mqtt-ca.pem         the broker's CA certificate, once one matching the pin is given

The folder is written under a temporary name and renamed into place, so a
device is either provisioned with all of it or not at all. A reset renames
it away first for the same reason.

At every start the code is verified again against the root key, and the
stored back-end and admin keys against the keys the code names (by
thumbprint): a key file changed behind the code's back stops the kiosk
(:class:`~kiosk.errors.PinnedKeyMismatch`, exit status 78). The identity
(site and device) is the one taken with the code, kept in the device key's
id; a config that names another device id stops the kiosk too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path


from ..atomicfile import fsync_dir, write_atomic
from ..config import KioskConfig
from ..errors import KeyFileError, NotProvisioned, PinnedKeyMismatch, ProvisioningRefused
from ..sync import keys as keymod
from .binding import bound_device, configured_identity
from .bundle import Bundle, ca_fingerprint, read_bundle, read_reset, refused
from .resets import UsedResets
from .trust import RootKeys

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.jws"
BACKEND_FILE = "backend.pub.jwks"
ADMIN_FILE = "admin.pub.jwks"
DEVICE_FILE = "device.jwks"
DEVICE_PUBLIC_FILE = "device.pub.jwks"
CA_FILE = "mqtt-ca.pem"


class ProvisioningStore:
    """Provisioning state of one device, as its config places it."""

    def __init__(self, config: KioskConfig, *, wall_clock=time.time):
        self.config = config
        self.settings = config.provisioning
        self.root_key_path = config.state_path(self.settings.fleet_root_key)
        self.directory = config.state_path(self.settings.directory)
        self._wall = wall_clock
        self._roots: RootKeys | None = None
        self.resets = UsedResets(self.directory.with_name(f"{self.directory.name}.resets.json"), wall_clock=wall_clock,
                                 keep_s=self.settings.clock_skew_s)

    # -- asking ------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Provisioning applies: it is on and the image carries a fleet root key."""
        return self.settings.enabled and self.root_key_path.is_file()

    @property
    def provisioned(self) -> bool:
        return (self.directory / BUNDLE_FILE).is_file()

    def roots(self) -> RootKeys:
        if self._roots is None:
            self._roots = RootKeys.load(self.root_key_path)
        return self._roots

    def load(self) -> Bundle | None:
        """The stored bundle, verified again against the root key; None when not provisioned.

        A stored bundle that no longer verifies (edited, or the root key
        replaced) is :class:`NotProvisioned`: the device must not run on it.
        """
        if not self.provisioned:
            return None
        if not self.root_key_path.is_file():
            raise NotProvisioned(f"{self.directory} holds a provisioning but the fleet root key {self.root_key_path} is missing")
        code = (self.directory / BUNDLE_FILE).read_bytes().strip()
        try:
            bundle = read_bundle(code, self.roots(), check_expiry=False)
        except ProvisioningRefused as e:
            raise NotProvisioned(f"{self.directory / BUNDLE_FILE}: stored provisioning does not verify: {e}") from e
        for name in (BACKEND_FILE, ADMIN_FILE, DEVICE_FILE):
            if not (self.directory / name).is_file():
                raise NotProvisioned(f"{self.directory / name}: missing; re-provision (reset first)")
        check_pinned(self.directory / BACKEND_FILE, bundle.backend, "the back end's")
        check_pinned(self.directory / ADMIN_FILE, bundle.admin, "the admins'")
        self.identity(bundle)
        return bundle

    def identity(self, bundle: Bundle) -> tuple[str, str]:
        """(site, device id) as provisioned: the owner of the device key made with the code.

        Raises :class:`PinnedKeyMismatch` when it disagrees with the code, or
        with a device id the config names (never silently one or the other).
        """
        path = self.directory / DEVICE_PUBLIC_FILE
        try:
            owner = keymod.load_public_one(path).owner
        except KeyFileError as e:
            raise NotProvisioned(f"{path}: {e}; re-provision (reset first)") from e
        site, _, device = owner.partition("/")
        if site != bundle.site or not device or (bundle.device_id and device != bundle.device_id):
            raise PinnedKeyMismatch(f"{path}: the device key is for {owner!r}, not what the provisioning code says "
                                    f"({bundle.site}/{bundle.device_id or '…'}); the kiosk does not run on it")
        _, configured = configured_identity(self.config)
        if configured is not None and configured != device:
            raise PinnedKeyMismatch(f"this kiosk was provisioned as {owner} but its config names device_id "
                                    f"{configured!r}: fix device.device_id, or reset and re-provision")
        return site, device

    def verify(self, code: str | bytes) -> Bundle:
        """Check a provisioning code (signature, content, expiry) without taking it."""
        return read_bundle(code, self.roots(), now=self._wall(), skew_s=self.settings.clock_skew_s)

    # -- taking a code -------------------------------------------------------------

    def install(self, code: str | bytes, *, attended: bool = False) -> Bundle:
        """Verify a provisioning code and write it, with the keys, in one step.

        Raises :class:`ProvisioningRefused` (bad code, not for this kiosk, or
        already provisioned) and leaves the device as it was. ``attended``:
        an installer took the code at a shell (see :mod:`.binding`).
        """
        if self.provisioned:
            raise refused("already_provisioned", f"site {self._stored_site()}")
        bundle = self.verify(code)
        device_id = bound_device(bundle, self.config, attended=attended)
        text = code.decode("ascii") if isinstance(code, bytes) else code  # ASCII: it verified
        device_keys = keymod.generate(keymod.device_owner(bundle.site, device_id))
        parent = self.directory.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}-", dir=parent))
        try:
            # Each file is written durably (write_atomic); the folder is renamed into place in one step.
            write_atomic(tmp / BUNDLE_FILE, text.strip() + "\n", mode=0o644)
            _write_public(tmp / BACKEND_FILE, bundle.backend.to_jwks(private=False))
            _write_public(tmp / ADMIN_FILE, bundle.admin.to_jwks(private=False))
            keymod.save_private(tmp / DEVICE_FILE, device_keys)
            _write_public(tmp / DEVICE_PUBLIC_FILE, device_keys.to_jwks(private=False))
            if self.directory.exists():  # appeared meanwhile: never replace it
                raise refused("already_provisioned")
            os.rename(tmp, self.directory)
            fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _own_like(self.directory, self.config.device.state_dir)
        log.info(
            "provisioned for site %s as device %s (code signed by %s, device key %s)",
            bundle.site, device_id, bundle.signed_by, device_keys.signing_kid,
        )
        return bundle

    def restore_keys(self) -> Bundle:
        """Write the back end's and the admins' public key files again from the stored, verified code."""
        if not self.provisioned:
            raise NotProvisioned("not provisioned: there are no keys to restore")
        code = (self.directory / BUNDLE_FILE).read_bytes().strip()
        try:
            bundle = read_bundle(code, self.roots(), check_expiry=False)
        except ProvisioningRefused as e:
            raise NotProvisioned(f"{self.directory / BUNDLE_FILE}: stored provisioning does not verify: {e}") from e
        for name, party in ((BACKEND_FILE, bundle.backend), (ADMIN_FILE, bundle.admin)):
            _write_public(self.directory / name, party.to_jwks(private=False))  # atomic and durable
        log.warning("the back end's and the admins' public keys were written again from the provisioning code")
        return bundle

    def install_ca(self, pem: bytes) -> Path:
        """Keep the broker's CA certificate if it matches the pin in the bundle (only that certificate)."""
        bundle = self.load()
        if bundle is None:
            raise NotProvisioned("not provisioned: the CA pin comes with the provisioning code")
        cert = pinned_certificate(pem, bundle.ca_sha256)
        if cert is None:
            raise KeyFileError(f"no certificate in the file matches the pinned CA fingerprint {bundle.ca_sha256}")
        path = self.directory / CA_FILE
        _write_public(path, cert)
        return path

    # -- resetting -----------------------------------------------------------------

    def reset(self, code: str | bytes, *, discard_undelivered: bool = False) -> Bundle:
        """Verify a signed reset and return the device to its unprovisioned state.

        The provisioning folder goes (keys included), and so does the
        database (gallery, events) and the template key: residents of the
        old site must not be recognised at the next. Refused while events
        are undelivered unless ``discard_undelivered``.
        """
        bundle = self.load()
        if bundle is None:
            raise refused("not_provisioned")
        reset = read_reset(code, self.roots(), now=self._wall(), skew_s=self.settings.clock_skew_s)
        _, device_id = self.identity(bundle)
        if (reset.site, reset.device_id) != (bundle.site, device_id):
            raise refused("wrong_device", f"for {reset.site}/{reset.device_id}, this is {bundle.site}/{device_id}")
        if reset.issued_at < bundle.issued_at:
            raise refused("stale_reset")
        if self.resets.used(reset.nonce):
            raise refused("reset_used")
        pending = self._undelivered()
        if pending and not discard_undelivered:
            raise refused("undelivered_events", f"{pending} undelivered; connect to the broker first, or discard them")
        self.resets.record(reset.nonce, reset.expires_at)  # before anything goes: a reset code is good once
        # The old site's residents first, durably: a power cut before the provisioning folder goes leaves a device
        # still provisioned for the old site with an empty gallery, never an unprovisioned one that a new site's
        # code would take while the old database and its template key came back.
        cfg = self.config
        residents = (cfg.database_path, Path(f"{cfg.database_path}-wal"), Path(f"{cfg.database_path}-shm"),
                     cfg.state_path(cfg.storage.template_key))
        for path in residents:
            path.unlink(missing_ok=True)
        for folder in {path.parent for path in residents if path.parent.is_dir()}:
            fsync_dir(folder)
        gone = self.directory.with_name(f".{self.directory.name}-reset-{os.getpid()}-{int(self._wall())}")
        os.rename(self.directory, gone)
        fsync_dir(self.directory.parent)
        shutil.rmtree(gone, ignore_errors=True)
        log.warning("provisioning reset: site %s device %s unprovisioned (%d undelivered events discarded)",
                    bundle.site, device_id, pending)
        return bundle

    def _undelivered(self) -> int:
        path = self.config.database_path
        if not path.exists():
            return 0
        from ..db import open_database

        db = open_database(path)
        try:
            return db.execute("SELECT count(*) FROM checkins WHERE delivered_at IS NULL").fetchone()[0]
        finally:
            db.close()

    def _stored_site(self) -> str:
        try:
            b = self.load()
            return b.site if b else "?"
        except NotProvisioned:
            return "? (stored provisioning does not verify)"

    # -- applying ------------------------------------------------------------------

    def apply(self, config: KioskConfig, bundle: Bundle) -> KioskConfig:
        """``config`` with what the bundle says: identity, service location, broker, key files."""
        data = config.model_dump()
        data["device"]["site"], data["device"]["device_id"] = self.identity(bundle)
        data["location"].update(latitude=bundle.latitude, longitude=bundle.longitude, radius_m=bundle.radius_m)
        data["mqtt"]["url"] = bundle.broker_url
        d = self.directory
        data["keys"].update(device_key=d / DEVICE_FILE, backend_public_key=d / BACKEND_FILE, admin_public_key=d / ADMIN_FILE)
        if (d / CA_FILE).is_file():
            data["mqtt"]["ca_file"] = d / CA_FILE
        return KioskConfig.model_validate(data).model_copy(update={"source_path": config.source_path})

    def check_ca(self, config: KioskConfig, bundle: Bundle) -> None:
        """Refuse a broker CA file that is not the pinned one (when publishing is on)."""
        if not config.mqtt.enabled:
            return
        path = keymod.resolve(config.mqtt.ca_file, config.device.state_dir)
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise KeyFileError(f"{path}: broker CA certificate missing ({e.strerror}); "
                               "`kiosk provision --ca-file FILE` installs one that matches the pin") from None
        certs = certificates_in(pem)
        if not certs or any(ca_fingerprint(c) != bundle.ca_sha256 for c in certs):
            raise KeyFileError(f"{path}: not the broker CA pinned by the provisioning code ({bundle.ca_sha256})")


def check_pinned(path: Path, pinned: keymod.PartyKeys, whose: str) -> None:
    """The public key file holds exactly the keys the provisioning code names (compared by thumbprint).

    Raises :class:`PinnedKeyMismatch` otherwise: a key added, replaced or
    removed behind the code's back must not be trusted, not even once.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        found = {keymod.key_from_jwk(k).thumbprint() for k in data["keys"]}
    except Exception as e:  # unreadable JSON, not a JWK Set, a bad key: joserfc raises several types
        raise PinnedKeyMismatch(f"{path}: {whose} public keys are unreadable ({type(e).__name__}); the kiosk does "
                                "not run on them. `kiosk provision --restore-keys` writes them again from the "
                                "signed code") from None
    expected = {pinned.signing.thumbprint(), pinned.encryption.thumbprint()}
    if found != expected:
        raise PinnedKeyMismatch(
            f"{path}: {whose} public keys are not the ones the signed provisioning code names (thumbprints "
            f"{', '.join(sorted(found))}; the code names {', '.join(sorted(expected))}). The file was changed: the "
            "kiosk does not run on it. `kiosk provision --restore-keys` writes it again from the signed code")


def pinned_certificate(pem: bytes, fingerprint: str) -> bytes | None:
    """The PEM of the one certificate in ``pem`` whose SHA-256 is ``fingerprint``, or None."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import load_der_x509_certificate

    for der in certificates_in(pem):
        if ca_fingerprint(der) == fingerprint:
            return load_der_x509_certificate(der).public_bytes(Encoding.PEM)
    return None


def certificates_in(pem: bytes) -> list[bytes]:
    """The DER bytes of every certificate in a PEM file (none if it is not one)."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import load_pem_x509_certificates

    try:
        return [c.public_bytes(Encoding.DER) for c in load_pem_x509_certificates(pem)]
    except ValueError:
        return []


def _write_public(path: Path, content) -> None:
    """A public file (0644), replaced atomically: a power cut leaves the old one or the new one."""
    data = content if isinstance(content, bytes) else (json.dumps(content, indent=2) + "\n").encode()
    write_atomic(path, data, mode=0o644)


def _own_like(directory: Path, state_dir: Path) -> None:
    """Run as root (an installer's shell), hand the files to the state dir's owner (the daemon's user)."""
    if os.geteuid() != 0:
        return
    try:
        st = Path(state_dir).stat()
    except OSError:
        return
    if st.st_uid == 0:
        return
    for p in [directory, *directory.iterdir()]:
        os.chown(p, st.st_uid, st.st_gid)
