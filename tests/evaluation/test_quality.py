"""The probe-quality study (issue 20): face size, sharpness and pose of real photos, and rates by bin."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def variants(tmp_path_factory, test_data):
    """One LFW photo as it is, at half size and blurred."""
    from kiosk.evaluation.pairs import labelled_images

    root = tmp_path_factory.mktemp("quality")
    src = test_data / "faces/lfw_dev/Aaron_Peirsol"
    photo = cv2.imread(str(sorted(src.glob("*.jpg"))[0]))
    (root / "p").mkdir()
    cv2.imwrite(str(root / "p/full.png"), photo)
    cv2.imwrite(str(root / "p/half.png"), cv2.resize(photo, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(root / "p/blurred.png"), cv2.GaussianBlur(photo, (0, 0), 3))
    samples = labelled_images(root)
    for s in samples:
        s.vector = np.zeros(128, np.float32)  # described (a face): measure() skips photos with none
    return {s.path.stem: s for s in samples}, root


def test_the_detector_measures_follow_the_photo(variants, tmp_path):
    from kiosk.config import DetectSettings
    from kiosk.evaluation.quality import measure

    samples, _ = variants
    cache = tmp_path / "quality.json"
    q = measure(list(samples.values()), DetectSettings(), cache, progress=False)
    full, half, blurred = (q[samples[k].sha256] for k in ("full", "half", "blurred"))
    assert 0.4 < half.width / full.width < 0.6
    assert blurred.sharpness < full.sharpness / 3
    assert full.yaw < 0.2  # LFW's photos are mostly frontal
    # Cached by content: a second call computes nothing (a photo with no vector is not even looked at).
    again = measure(list(samples.values()), DetectSettings(), cache, progress=False)
    assert again == q


def test_a_visit_is_as_good_as_its_worst_photo():
    from kiosk.evaluation.quality import per_visit

    measures = {"width": np.array([120.0, 60.0, 90.0]), "sharpness": np.array([30.0, 80.0, 10.0]),
                "yaw": np.array([0.05, 0.3, 0.1])}
    v = per_visit(measures, np.array([[0, 1], [0, 2]]))
    assert v["width"].tolist() == [60.0, 90.0]
    assert v["sharpness"].tolist() == [30.0, 10.0]
    assert v["yaw"].tolist() == [0.3, 0.1]
