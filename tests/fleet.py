"""A fleet for provisioning tests: root key, back-end and admin keys, a broker CA, and codes signed with them.

Also puts a QR code picture into real video frames the way a camera sees
a code held up to it: scaled, turned a little, slightly out of focus.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kiosk.config import KioskConfig, parse_config
from kiosk.provisioning import bundle as bmod
from kiosk.provisioning.trust import generate_root, save_root
from kiosk.sync import keys as keymod

SITE = "block-7"
DEVICE = "door-1"
#: The test kiosk's hardware id (provisioning.hardware_id in its config); codes are bound to it by default.
HARDWARE = "kiosk-hw-0001"
LAT, LON = 31.2304, 121.4737


def make_ca(path: Path, name: str = "test broker CA") -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Fleet:
    dir: Path
    root_private: Path
    root_public: Path
    backend_private: Path
    backend_public: Path
    admin_public: Path
    ca: Path

    @property
    def root(self):
        from kiosk.provisioning.trust import load_root_private

        return load_root_private(self.root_private)

    @property
    def backend(self) -> keymod.PartyKeys:
        return keymod.load_private(self.backend_private)

    def bundle(self, **overrides) -> bmod.Bundle:
        from kiosk.provisioning.store import certificates_in

        args = dict(
            site=SITE, device_id=DEVICE, name="Riverside Gardens Block 7", address="12 River Road, Xuhui, Shanghai",
            latitude=LAT, longitude=LON, radius_m=120.0, broker_url="mqtts://broker.example.org:8883",
            ca_sha256=bmod.ca_fingerprint(certificates_in(self.ca.read_bytes())[0]),
            backend=keymod.load_public_one(self.backend_public), admin=keymod.load_public_one(self.admin_public),
            valid_s=3600, hardware_id=HARDWARE,
        )
        args.update(overrides)
        return bmod.make_bundle(**args)

    def code(self, root=None, **overrides) -> str:
        return bmod.sign_bundle(self.bundle(**overrides), root or self.root)

    def config(self, state_dir: Path, extra: str = "") -> KioskConfig:
        return parse_config(
            f'[device]\nstate_dir = "{state_dir}"\n[logging]\njournald = false\n'
            f'[provisioning]\nfleet_root_key = "{self.root_public}"\nscan_every = 2\n'
            f'hardware_id = "{HARDWARE}"\n{extra}'
        )

    def config_file(self, state_dir: Path, extra: str = "") -> Path:
        path = self.dir / "kiosk.toml"
        path.write_text(
            f'[device]\nstate_dir = "{state_dir}"\n[logging]\njournald = false\n'
            f'[provisioning]\nfleet_root_key = "{self.root_public}"\nhardware_id = "{HARDWARE}"\n{extra}'
        )
        return path


def make_fleet(root: Path) -> Fleet:
    root.mkdir(parents=True, exist_ok=True)
    f = Fleet(root, root / "fleet-root.jwks", root / "fleet-root.pub", root / "backend.jwks",
              root / "backend.pub.jwks", root / "admin.pub.jwks", make_ca(root / "ca.pem"))
    save_root(f.root_private, f.root_public, generate_root())
    backend = keymod.generate(keymod.BACKEND)
    keymod.save_private(f.backend_private, backend)
    keymod.save_public(f.backend_public, backend)
    keymod.save_public(f.admin_public, keymod.generate(bmod.ADMIN))
    return f


@pytest.fixture
def fleet(tmp_path) -> Fleet:
    return make_fleet(tmp_path / "fleet")


def expired_code(fleet: Fleet) -> str:
    return fleet.code(now=time.time() - 3 * 3600, valid_s=3600)


# -- a code held up to the camera ------------------------------------------------


def video_frames(path: Path, start: int, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    for _ in range(count):
        ok, image = cap.read()
        assert ok, f"{path}: fewer than {start + count} frames"
        frames.append(image)
    cap.release()
    return frames


def held_up(frame: np.ndarray, picture: np.ndarray, *, size: int, angle: float, blur: float,
            at: tuple[int, int]) -> np.ndarray:
    """``picture`` (a grey QR PNG) scaled to ``size`` px, turned ``angle``° about its centre, pasted with its
    top-left corner near ``at``; then the whole frame blurred (sigma ``blur`` px)."""
    m = size // 6  # room for the corners to turn into
    big = size + 2 * m
    canvas = np.full((big, big), 255, np.uint8)
    canvas[m: m + size, m: m + size] = cv2.resize(picture, (size, size), interpolation=cv2.INTER_AREA)
    mask = np.zeros((big, big), np.uint8)
    mask[m: m + size, m: m + size] = 255
    turn = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    code = cv2.warpAffine(canvas, turn, (big, big), flags=cv2.INTER_LINEAR, borderValue=255)
    inside = cv2.warpAffine(mask, turn, (big, big)) > 127
    out = frame.copy()
    x, y = at[0] - m, at[1] - m
    h, w = out.shape[:2]
    x0, y0 = max(0, -x), max(0, -y)
    x1, y1 = min(big, w - x), min(big, h - y)
    region = out[y + y0: y + y1, x + x0: x + x1]
    keep = inside[y0:y1, x0:x1]
    region[keep] = code[y0:y1, x0:x1][keep][:, None]
    return cv2.GaussianBlur(out, (0, 0), blur) if blur else out


def qr_picture(code: str, path: Path, scale: int = 4) -> np.ndarray:
    from kiosk.admin.provision import write_qr

    write_qr(code, path, scale=scale)
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
