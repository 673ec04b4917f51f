"""The fleet's root key: the one key every device trusts out of the box.

The image carries its public half (``provisioning.fleet_root_key``, put in
place by ``install.sh --fleet-key``). Provisioning codes and resets are
compact JWS signed with its private half, which stays with the fleet's
operator. It is an Ed25519 key alone (it signs, nobody encrypts to it), kept
as a JWK Set whose key ids read ``fleet/sig/<thumbprint>``; a public file
may list several root keys while one is being replaced by the next.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from joserfc.jwk import OKPKey

from ..atomicfile import write_atomic
from ..errors import KeyFileError
from ..keyfile import check_private, write_secret
from ..sync.keys import SIG_ALG, jwk_dict, key_from_jwk, public_key, with_meta

log = logging.getLogger(__name__)

FLEET = "fleet"


def generate_root() -> OKPKey:
    """A new Ed25519 fleet root key (private), with its key id."""
    return with_meta(OKPKey.generate_key("Ed25519"), FLEET, "sig", SIG_ALG)


def public_of(key: OKPKey) -> OKPKey:
    return public_key(key)


def save_root(private_path: Path | str, public_path: Path | str, key: OKPKey, *, overwrite: bool = False) -> None:
    """Write the private key (0600) and its public half (0644) as JWK Sets."""
    private_path, public_path = Path(private_path), Path(public_path)
    if public_path.exists() and not overwrite:
        raise KeyFileError(f"{public_path}: exists; refusing to overwrite a key")
    write_secret(private_path, _jwks([jwk_dict(key, private=True)]), overwrite=overwrite)
    write_atomic(public_path, _jwks([jwk_dict(key, private=False)]), mode=0o644)


def _jwks(keys: list[dict]) -> bytes:
    return (json.dumps({"keys": keys}, indent=2) + "\n").encode()


def load_root_private(path: Path | str) -> OKPKey:
    """The fleet's private root key (refused when others may read the file)."""
    path = Path(path)
    check_private(path)
    keys = _read(path)
    if len(keys) != 1 or not keys[0].is_private:
        raise KeyFileError(f"{path}: expected one private fleet root key")
    return keys[0]


class RootKeys:
    """The fleet root public keys a device trusts, by key id."""

    def __init__(self, keys: list[OKPKey]):
        self._by_kid = {k.kid: public_of(k) for k in keys}

    @classmethod
    def load(cls, path: Path | str) -> "RootKeys":
        """Read the root public key file; a file with private keys must be 0600 (only its public half is kept)."""
        path = Path(path)
        if not path.is_file():
            raise KeyFileError(f"{path}: fleet root key missing")
        keys = _read(path)
        if any(k.is_private for k in keys):
            check_private(path)
        return cls(keys)

    def get(self, kid: str) -> OKPKey | None:
        return self._by_kid.get(kid)

    @property
    def kids(self) -> list[str]:
        return sorted(self._by_kid)

    def __len__(self) -> int:
        return len(self._by_kid)


def _read(path: Path) -> list[OKPKey]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeyFileError(f"{path}: not a readable JWK Set: {e}") from None
    raw = data.get("keys") if isinstance(data, dict) and "keys" in data else [data]
    if not isinstance(raw, list) or not raw:
        raise KeyFileError(f"{path}: not a JWK Set")
    keys = []
    for item in raw:
        if not isinstance(item, dict) or item.get("kty") != "OKP" or item.get("crv") != "Ed25519":
            raise KeyFileError(f"{path}: a fleet root key must be Ed25519")
        kid = item.get("kid", "")
        if not isinstance(kid, str) or not kid.startswith(f"{FLEET}/sig/"):
            raise KeyFileError(f"{path}: key id {kid!r} is not a fleet root key id ({FLEET}/sig/…)")
        try:
            keys.append(key_from_jwk(item))
        except Exception as e:  # joserfc raises several types for bad keys
            raise KeyFileError(f"{path}: bad key: {e}") from None
    return keys
