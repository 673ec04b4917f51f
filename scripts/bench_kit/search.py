"""1:N search at 100,000 templates: ``Gallery.search`` against ``face_recognition.face_distance``."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from kiosk.gallery.templates import DIMENSIONS
from kiosk.gallery.store import Gallery, Resident


@dataclass
class SearchResult:
    templates: int
    residents: int
    queries: int
    ours_ms: float  # median CPU ms per query
    baseline_ms: float
    agree: int  # queries on which both found the same nearest resident

    @property
    def ratio(self) -> float:
        return self.baseline_ms / self.ours_ms if self.ours_ms else float("inf")

    def as_json(self) -> dict:
        return {
            "templates": self.templates,
            "residents": self.residents,
            "queries": self.queries,
            "ours_ms_per_query": round(self.ours_ms, 3),
            "face_distance_ms_per_query": round(self.baseline_ms, 3),
            "ratio": round(self.ratio, 1),
            "same_nearest": self.agree,
        }


def random_templates(n: int, seed: int = 2) -> np.ndarray:
    """Unit-ish vectors (norms 0.9–1.1), like dlib descriptors."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIMENSIONS))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * rng.uniform(0.9, 1.1, size=(n, 1))


def bench_search(templates: int = 100_000, per_resident: int = 5, queries: int = 30) -> SearchResult:
    import face_recognition

    known = random_templates(templates)  # float64, as face_encodings returns
    owners = [f"r{i // per_resident:06d}" for i in range(templates)]
    gallery = Gallery({o: Resident(o, o) for o in set(owners)}, owners, known.astype(np.float32))
    probes = random_templates(queries, seed=3)
    ours, theirs, agree = [], [], 0
    for q in probes:
        q32 = q.astype(np.float32)
        t = time.process_time()
        match = gallery.search(q32)
        ours.append(time.process_time() - t)
        t = time.process_time()
        distances = face_recognition.face_distance(known, q)
        best = int(np.argmin(distances))
        theirs.append(time.process_time() - t)
        agree += match.resident_id == owners[best]
    return SearchResult(
        templates, len(gallery), queries, 1000 * statistics.median(ours), 1000 * statistics.median(theirs), agree
    )


#: A door's gallery search must stay within this (CPU ms per query, median): issue 12's "a few milliseconds".
SITE_SEARCH_TARGET_MS = 5.0


@dataclass
class SiteSearchResult:
    """The kiosk's own search at a large site: every template and each resident's mean, ranked with the cohort."""

    residents: int
    templates: int
    queries: int
    median_ms: float
    p90_ms: float
    build_s: float  # building the in-memory gallery (means included), as a gallery update or reload does

    def as_json(self) -> dict:
        return {"residents": self.residents, "templates": self.templates, "queries": self.queries,
                "median_ms_per_query": round(self.median_ms, 3), "p90_ms_per_query": round(self.p90_ms, 3),
                "build_s": round(self.build_s, 3), "target_ms": SITE_SEARCH_TARGET_MS}


def bench_site_search(residents: int = 10_000, per_resident: int = 5, queries: int = 60) -> SiteSearchResult:
    templates = residents * per_resident
    known = random_templates(templates, seed=5).astype(np.float32)
    owners = [f"r{i // per_resident:06d}" for i in range(templates)]
    t = time.process_time()
    gallery = Gallery({o: Resident(o, o) for o in set(owners)}, owners, known)
    build = time.process_time() - t
    probes = random_templates(queries, seed=6).astype(np.float32)
    took = []
    for q in probes:
        t = time.process_time()
        gallery.search(q, means=True)
        took.append(time.process_time() - t)
    took.sort()
    return SiteSearchResult(residents, templates, queries, 1000 * statistics.median(took),
                            1000 * took[int(0.9 * (len(took) - 1))], build)
