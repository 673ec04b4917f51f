"""The JOSE keys of a device and of the back end, kept as JWK Set files.

Each party owns two key pairs: an Ed25519 key that signs (JWS) and a P-256
key that others encrypt to (JWE, ECDH-ES+A256KW). P-256 rather than X25519
because every JOSE library does ECDH-ES on it.

A private file holds both private keys (mode 0600, refused when others may
read it); its public half is what the other side is given. Key ids say whose
key it is: ``<owner>/<use>/<thumbprint>``, where the owner is
``<site>/<device>`` for a device and ``backend`` for the back end, so a
verified signature names the device that made it.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, JWKRegistry, OKPKey

from ..config import KioskConfig
from ..atomicfile import write_atomic
from ..errors import ConfigError, KeyFileError
from ..keyfile import check_private, credential_path, write_secret

log = logging.getLogger(__name__)

#: JWS algorithm for Ed25519 (RFC 9864; "EdDSA" is its deprecated, ambiguous name).
SIG_ALG = "Ed25519"
#: JWE key management and content encryption.
KEY_ALG = "ECDH-ES+A256KW"
CONTENT_ENC = "A256GCM"
ENC_CURVE = "P-256"

BACKEND = "backend"

#: A JOSE key as the kiosk holds it (joserfc): Ed25519 (OKP) signs, P-256 (EC) is encrypted to.
Key = OKPKey | ECKey


@dataclass(frozen=True)
class PartyKeys:
    """One party's keys: ``signing`` (Ed25519) and ``encryption`` (P-256).

    Private or public; ``has_private`` says which.
    """

    owner: str
    signing: Key
    encryption: Key

    @property
    def has_private(self) -> bool:
        return self.signing.is_private and self.encryption.is_private

    @property
    def signing_kid(self) -> str:
        return self.signing.kid

    @property
    def encryption_kid(self) -> str:
        return self.encryption.kid

    def public(self) -> "PartyKeys":
        return PartyKeys(self.owner, public_key(self.signing), public_key(self.encryption))

    def to_jwks(self, *, private: bool) -> dict:
        return {"keys": [jwk_dict(k, private=private) for k in (self.signing, self.encryption)]}


def jwk_dict(key: Key, *, private: bool) -> dict[str, Any]:
    """One key as a JWK (a dict), its members in name order as the key files have always had them."""
    return dict(sorted(key.as_dict(private=private).items()))


def key_from_jwk(data: Any) -> Key:
    """A key from a JWK (a dict); ValueError (or another joserfc error) when it is not a sound key."""
    if not isinstance(data, dict):
        raise ValueError("a JWK is a JSON object")
    return JWKRegistry.import_key(data)


def public_key(key: Key) -> Key:
    """The public half of one key (kid, use and alg kept)."""
    return type(key).import_key(key.as_dict(private=False))


def owner_of_kid(kid: str) -> str:
    """The owner named in a key id (``site/device`` or ``backend``)."""
    parts = kid.rsplit("/", 2)
    if len(parts) != 3 or parts[1] not in ("sig", "enc") or not parts[0]:
        raise ValueError(f"not a kiosk key id: {kid!r}")
    return parts[0]


def device_owner(site: str, device: str) -> str:
    return f"{site}/{device}"


def generate(owner: str) -> PartyKeys:
    """Make a new signing and encryption key pair for ``owner``."""
    if not owner or owner.count("/") > 1 or any(c.isspace() for c in owner):
        raise ValueError(f"bad key owner {owner!r}: use SITE/DEVICE or 'backend'")
    sig = with_meta(OKPKey.generate_key("Ed25519"), owner, "sig", SIG_ALG)
    enc = with_meta(ECKey.generate_key(ENC_CURVE), owner, "enc", KEY_ALG)
    return PartyKeys(owner, sig, enc)


def with_meta(key: Key, owner: str, use: str, alg: str) -> Key:
    """``key`` named ``<owner>/<use>/<RFC 7638 thumbprint>``, with its use and algorithm."""
    data = key.as_dict(private=key.is_private)
    data.update(kid=f"{owner}/{use}/{key.thumbprint()}", use=use, alg=alg)
    return type(key).import_key(data)


def save_private(path: Path | str, keys: PartyKeys, *, overwrite: bool = False) -> Path:
    """Write ``keys`` (private) to ``path`` as a 0600 JWK Set."""
    if not keys.has_private:
        raise KeyFileError(f"{path}: these keys have no private half")
    return write_secret(path, (json.dumps(keys.to_jwks(private=True), indent=2) + "\n").encode(), overwrite=overwrite)


def save_public(path: Path | str, keys: PartyKeys, *, overwrite: bool = False) -> Path:
    """Write the public half of ``keys`` to ``path`` (0644: it is public)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: exists; refusing to overwrite a key")
    return write_atomic(path, json.dumps(keys.to_jwks(private=False), indent=2) + "\n", mode=0o644)


def resolve(path: Path | str, base: Path | None = None) -> Path:
    """Where a configured key file is: ``$CREDENTIALS_DIRECTORY`` first, then under ``base``."""
    found = credential_path(path)
    if found.is_absolute() or base is None:
        return found
    return base / found


def load_private(path: Path | str) -> PartyKeys:
    """Read a private key file; refuse it when missing, malformed or readable by others."""
    path = Path(path)
    check_private(path)
    keys = _parse(path)
    if len(keys) != 1:
        raise KeyFileError(f"{path}: expected the keys of one party, found {len(keys)}")
    party = keys[0]
    if not party.has_private:
        raise KeyFileError(f"{path}: not a private key file (no private key material)")
    return party


def load_public(path: Path | str) -> list[PartyKeys]:
    """Read public keys (one or more parties) from a JWK Set file.

    A file that holds private keys is checked like a private file, and only
    its public half is kept.
    """
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"{path}: key file missing")
    parties = _parse(path)
    if any(p.signing.is_private or p.encryption.is_private for p in parties):
        check_private(path)
    return [p.public() for p in parties]


def load_public_one(path: Path | str) -> PartyKeys:
    parties = load_public(path)
    if len(parties) != 1:
        raise KeyFileError(f"{path}: expected the keys of one party, found {len(parties)}")
    return parties[0]


def _parse(path: Path) -> list[PartyKeys]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeyFileError(f"{path}: not a readable JWK Set: {e}") from None
    raw = data.get("keys") if isinstance(data, dict) and "keys" in data else [data]
    if not isinstance(raw, list) or not raw:
        raise KeyFileError(f"{path}: not a JWK Set")
    by_owner: dict[str, dict[str, Key]] = {}
    for item in raw:
        try:
            key = key_from_jwk(item)
            owner = owner_of_kid(item.get("kid", ""))
        except Exception as e:  # joserfc raises several types for bad keys
            raise KeyFileError(f"{path}: bad key: {e}") from None
        use = item.get("use")
        if use not in ("sig", "enc"):
            raise KeyFileError(f"{path}: key {str(item.get('kid'))[:80]!r} has use {repr(use)[:40]}, "
                               "not 'sig' or 'enc'")
        if use == "sig" and not (item.get("kty") == "OKP" and item.get("crv") == "Ed25519"):
            raise KeyFileError(f"{path}: signing key {item.get('kid')} is not Ed25519")
        if use == "enc" and not (item.get("kty") == "EC" and item.get("crv") == ENC_CURVE):
            raise KeyFileError(f"{path}: encryption key {item.get('kid')} is not {ENC_CURVE}")
        slot = by_owner.setdefault(owner, {})
        if use in slot:
            raise KeyFileError(f"{path}: two {use} keys for {owner}")
        slot[use] = key
    parties = []
    for owner, slot in by_owner.items():
        if set(slot) != {"sig", "enc"}:
            raise KeyFileError(f"{path}: {owner} needs one 'sig' and one 'enc' key")
        parties.append(PartyKeys(owner, slot["sig"], slot["enc"]))
    return parties


def compact_public(party: PartyKeys) -> str:
    """The public half of ``party`` as short text for a QR code: ``SIG.ENC``.

    SIG is the raw Ed25519 public key, ENC the compressed P-256 point, both
    base64url. :func:`party_from_compact` rebuilds the same keys and key ids.
    """
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    sig = party.signing.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    enc = party.encryption.public_key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    return f"{_b64url(sig)}.{_b64url(enc)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def party_from_compact(owner: str, text: str) -> PartyKeys:
    """Rebuild public keys (with their key ids) from :func:`compact_public` text; ValueError if malformed."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        sig_text, enc_text = text.split(".")
        sig = ed25519.Ed25519PublicKey.from_public_bytes(_b64url_decode(sig_text))
        enc = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url_decode(enc_text))
    except Exception as e:  # bad base64, wrong length, point not on the curve
        raise ValueError(f"not compact public keys: {e}") from None
    return PartyKeys(
        owner,
        with_meta(OKPKey.import_key(sig), owner, "sig", SIG_ALG),
        with_meta(ECKey.import_key(enc), owner, "enc", KEY_ALG),
    )


class KeyRing:
    """Public keys of known parties, looked up by key id."""

    def __init__(self, parties: Iterable[PartyKeys] = ()):
        self._by_kid: dict[str, tuple[str, Key]] = {}
        self.owners: set[str] = set()
        for p in parties:
            self.add(p)

    def add(self, party: PartyKeys) -> None:
        pub = party.public()
        self._by_kid[pub.signing_kid] = (pub.owner, pub.signing)
        self._by_kid[pub.encryption_kid] = (pub.owner, pub.encryption)
        self.owners.add(pub.owner)

    @classmethod
    def from_files(cls, paths: Iterable[Path | str]) -> "KeyRing":
        """The public keys in these files; two different keys for one party are refused (:class:`KeyFileError`).

        One identity, one key: a second key for a door means two kiosks hold
        one identity, or a stale file beside a new one.
        """
        ring = cls()
        seen: dict[str, tuple[str, Path]] = {}
        for path in paths:
            for party in load_public(path):
                first = seen.get(party.owner)
                if first is not None and first[0] != party.signing_kid:
                    raise KeyFileError(
                        f"{path} and {first[1]}: two different keys for {party.owner} (two kiosks provisioned as "
                        "one device, or an old key file left beside a new one). Only one key may speak for a door: "
                        "remove the one that is not in use")
                seen[party.owner] = (party.signing_kid, Path(path))
                ring.add(party)
        return ring

    def signer(self, kid: str) -> tuple[str, Key] | None:
        """(owner, public signing key) for a signing key id, or None."""
        hit = self._by_kid.get(kid)
        if hit is None or hit[1].get("use") != "sig":
            return None
        return hit

    def __len__(self) -> int:
        return len(self.owners)


def load_device_keys(config: KioskConfig) -> tuple[PartyKeys, PartyKeys]:
    """The device's private keys and the back end's public keys, from ``[keys]``.

    Raises :class:`~kiosk.errors.KeyFileError` when one is missing, malformed,
    made for another device (a :class:`~kiosk.errors.ConfigError`: exit 78),
    or (the private one) readable by others.
    """
    base = config.device.state_dir
    device = check_device_key_owner(config, load_private(resolve(config.keys.device_key, base)))
    backend_path = resolve(config.keys.backend_public_key, base)
    if not backend_path.is_file():
        raise KeyFileError(
            f"{backend_path}: the back end's public key is missing; publishing needs it (keys.backend_public_key)"
        )
    return device, load_public_one(backend_path)


def check_key_files(config: KioskConfig) -> None:
    """What the daemon checks at start-up, before anything else runs.

    With ``mqtt.enabled`` both key files must be there and sound. Without it,
    a device key file that exists must still not be readable by others.
    """
    if config.mqtt.enabled:
        load_device_keys(config)
        return
    check_device_key_owner(config)


def check_device_key_owner(config: KioskConfig, device: PartyKeys | None = None) -> PartyKeys | None:
    """The device key file (if there is one) must be this device's: ``device.site``/``device.device_id``.

    A mismatch is a configuration error (exit status 78: systemd does not
    restart on it): the config names one door and the key file another.
    """
    if device is None:
        path = resolve(config.keys.device_key, config.device.state_dir)
        if not path.exists():
            return None
        device = load_private(path)
    expected = device_owner(config.device.site, config.device.device_id)
    if device.owner != expected:
        raise ConfigError(
            f"keys.device_key: {config.keys.device_key} holds the keys of {device.owner!r}, but this config is "
            f"{expected!r} (device.site, device.device_id): fix one of them"
        )
    return device
