"""Templates at rest: descriptors sealed with AES-GCM under the device's template key.

The resident id is bound into each ciphertext as associated data, so a
template cannot be moved to another resident without failing to open.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import KeyFileError, StorageError
from ..keyfile import credential_path, read_secret, write_secret

#: Length of a face descriptor (dlib's ResNet).
DIMENSIONS = 128

_NONCE = 12
_VERSION = b"\x01"


class TemplateCipher:
    def __init__(self, key: bytes):
        if len(key) != 32:
            raise KeyFileError("template key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path | str, *, create: bool = True) -> "TemplateCipher":
        """Load the key, creating a new random one (0600) when missing and allowed."""
        path = credential_path(path)
        if not Path(path).exists() and create:
            write_secret(path, AESGCM.generate_key(bit_length=256))
        return cls(read_secret(path))

    def seal(self, vector: np.ndarray, resident_id: str) -> bytes:
        v = np.asarray(vector, dtype="<f4")
        if v.shape != (DIMENSIONS,) or not np.all(np.isfinite(v)):
            raise ValueError(f"a template is {DIMENSIONS} finite numbers")
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, v.tobytes(), resident_id.encode())

    def open(self, blob: bytes, resident_id: str) -> np.ndarray:
        if len(blob) < 1 + _NONCE + 16 or blob[:1] != _VERSION:
            raise StorageError("template blob is not a sealed template")
        nonce, ct = blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
        try:
            raw = self._aead.decrypt(nonce, ct, resident_id.encode())
        except InvalidTag:
            raise StorageError("template does not open with this device's key (tampered or wrong key)") from None
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
