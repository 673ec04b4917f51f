"""Real photos of the shared data, described once per test module (the descriptors cached under a temp folder)."""

from __future__ import annotations

from pathlib import Path


def described(root: Path, identities, cache_path: Path, face: str = "central") -> dict[str, list]:
    """The samples of ``identities`` under ``root/<identity>/*``, each with its descriptor, by identity (in order)."""
    from kiosk.config import DetectSettings
    from kiosk.evaluation.descriptors import DescriptorCache, describe_samples
    from kiosk.evaluation.pairs import Describer, labelled_images

    wanted = set(identities)
    samples = [s for s in labelled_images(root) if s.identity in wanted]
    cache = DescriptorCache(cache_path)
    try:
        describe_samples(samples, Describer(DetectSettings(), face=face), cache, progress=False)
    finally:
        cache.close()
    out: dict[str, list] = {}
    for s in samples:
        out.setdefault(s.identity, []).append(s)
    return out
