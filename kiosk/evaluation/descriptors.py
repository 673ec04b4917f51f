"""A cache of photos' descriptors, so that an evaluation pays for each descriptor once.

A descriptor costs about 100 ms; the LFW development half has 6,274 photos.
Descriptors are kept in SQLite keyed by the photo's content (SHA-256) and by
the describer: model, landmarks, which face of the photo and jitter passes. A
renamed or copied photo is found again; a changed model is not mistaken for
the old one. "No face found" is cached too.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import sqlite_utils

from ..errors import EnrollmentRefused
from ..gallery.templates import DIMENSIONS
from ..match.enroll import read_image
from ..match.models import MODEL_ID
from .pairs import Describer, Sample

log = logging.getLogger(__name__)

#: Bumped when what a describer computes for the same key changes; older rows are dropped.
SCHEMA_VERSION = 1


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/kiosk-data/descriptors.sqlite`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kiosk-data" / "descriptors.sqlite"


def describer_key(describer: Describer) -> str:
    """What a cached descriptor was computed with."""
    return f"{MODEL_ID};landmarks{describer.landmarks};{describer.face};jitter{describer.jitter}"


class DescriptorCache:
    """Descriptors by (photo SHA-256, describer key); ``None`` means no face was found."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(self.path)
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            if "descriptors" in self.db.table_names():
                log.info("descriptor cache %s has schema %d, not %d: starting afresh", self.path, version, SCHEMA_VERSION)
                self.db["descriptors"].drop()
            self.db["descriptors"].create({"sha256": str, "describer": str, "vector": bytes}, pk=("sha256", "describer"))
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def get_many(self, shas: list[str], key: str) -> dict[str, np.ndarray | None]:
        out: dict[str, np.ndarray | None] = {}
        for i in range(0, len(shas), 500):
            part = shas[i : i + 500]
            marks = ",".join("?" * len(part))
            for sha, blob in self.db.execute(
                f"SELECT sha256, vector FROM descriptors WHERE describer = ? AND sha256 IN ({marks})", [key, *part]
            ):
                out[sha] = None if blob is None else np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return out

    def put_many(self, rows: list[tuple[str, np.ndarray | None]], key: str) -> None:
        records = [{"sha256": sha, "describer": key, "vector": None if v is None else np.asarray(v, dtype="<f4").tobytes()}
                   for sha, v in rows]
        with self.db.conn:
            self.db["descriptors"].insert_all(records, replace=True)

    def __len__(self) -> int:
        return self.db["descriptors"].count

    def close(self) -> None:
        self.db.close()


def describe_samples(samples: list[Sample], describer: Describer, cache: DescriptorCache | None = None,
                     *, progress: bool = True, desc: str = "describing") -> int:
    """Give every sample its descriptor (``None``: no face), from the cache where it can; returns how many were computed.

    New descriptors are stored as they come (in batches), so an interrupted run loses little.
    """
    from tqdm import tqdm  # the admin extra: the commands that come here check for it first

    key = describer_key(describer)
    known = cache.get_many(sorted({s.sha256 for s in samples}), key) if cache is not None else {}
    todo: dict[str, list[Sample]] = {}
    for s in samples:
        if s.sha256 in known:
            s.vector = known[s.sha256]
        else:
            todo.setdefault(s.sha256, []).append(s)
    pending: list[tuple[str, np.ndarray | None]] = []
    with tqdm(total=len(todo), desc=desc, unit="photo", file=sys.stderr, disable=not progress or None) as bar:
        for sha, group in todo.items():
            try:
                vector = describer.describe(read_image(group[0].path))
            except EnrollmentRefused as e:
                log.warning("%s", e)
                vector = None
            if vector is not None and vector.shape != (DIMENSIONS,):
                raise ValueError(f"describer returned shape {vector.shape}")
            for s in group:
                s.vector = vector
            pending.append((sha, vector))
            if cache is not None and len(pending) >= 50:
                cache.put_many(pending, key)
                pending = []
            bar.update(1)
    if cache is not None and pending:
        cache.put_many(pending, key)
    return len(todo)
