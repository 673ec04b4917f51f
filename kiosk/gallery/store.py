"""The gallery: residents and their templates, stored in SQLite and searched in memory.

:class:`GalleryStore` owns the rows (templates sealed at rest);
:class:`Gallery` is an immutable in-memory snapshot — one float32 matrix —
that the recogniser searches and that is swapped in one step on updates.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass

import numpy as np
import sqlite_utils

from ..errors import ConfigError
from .adapt import NOT_ANCHORED, NOTHING_NEW, AdaptPolicy, Admission, DoorTemplate, Templates
from .templates import DIMENSIONS, TemplateCipher

log = logging.getLogger(__name__)


#: What a display name is made of, wherever one is carried (a gallery update's :data:`~kiosk.sync.updates.format.Name`,
#: a door's proposal): no control character. One a gallery update could not carry, once stored, would stop every
#: later update of the site (erasures too): refused before it is stored.
NAME_CHARS = r"[^\x00-\x1f\x7f]"
_NAME = re.compile(NAME_CHARS + "{1,200}")


def check_name(name: object) -> str:
    """``name`` if a gallery update can carry it, else :class:`ConfigError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError("a display name is 1 to 200 characters, none of them a control character (a new line, a tab)")
    return name


@dataclass(frozen=True, slots=True)
class Resident:
    id: str
    name: str  # check_name: what a gallery update can carry
    valid_from: float | None = None
    valid_until: float | None = None

    def valid_at(self, t: float) -> bool:
        return (self.valid_from is None or t >= self.valid_from) and (self.valid_until is None or t < self.valid_until)


#: How many residents after the nearest make a search's cohort (see :class:`Match`).
COHORT_SIZE = 10


@dataclass(frozen=True, slots=True)
class Match:
    """The nearest resident, the runner-up (nearest *other* resident) and the cohort.

    The cohort is the mean distance to the ``COHORT_SIZE`` residents after
    the nearest: how close the face is to the rest of the gallery (nan when
    nobody else is there).
    """

    resident_id: str | None
    distance: float
    runner_up_id: str | None
    runner_up_distance: float
    cohort: float = float("nan")

    @property
    def margin(self) -> float:
        return self.runner_up_distance - self.distance


@dataclass(frozen=True)
class Ranking:
    """What :meth:`Gallery.rank` found for each of several descriptors (arrays, one row each)."""

    best: np.ndarray  # index into Gallery.ids, -1 for nobody
    distance: np.ndarray  # inf for nobody
    runner_up: np.ndarray  # index, -1 for none
    runner_up_distance: np.ndarray  # inf for none
    cohort: np.ndarray  # nan for none

    @property
    def margin(self) -> np.ndarray:
        return self.runner_up_distance - self.distance


def gallery_digest(residents: dict[str, Resident], vectors: dict[str, list[bytes]]) -> str:
    """SHA-256 over every resident (id, name, validity) and their template vectors.

    Independent of storage order and of ciphertexts, so the admin's database
    and a device's gallery hash alike when they hold the same residents.
    ``vectors`` maps a resident id to its templates as little-endian float32 bytes.
    """
    h = hashlib.sha256()
    for rid in sorted(residents):
        r = residents[rid]
        when = [repr(float(t)) if t is not None else "-" for t in (r.valid_from, r.valid_until)]
        h.update(f"{rid}\0{r.name}\0{when[0]}\0{when[1]}\0".encode())
        for v in sorted(vectors.get(rid, ())):
            h.update(len(v).to_bytes(4, "big") + v)
    return h.hexdigest()

#: The meta key of the stricter target set by a signed gallery update.
FPIR_CAP_KEY = "match_fpir_target"


class Gallery:
    """Immutable search structure over all templates of valid residents.

    Templates are grouped by resident so that one ``minimum.reduceat`` gives
    each resident's nearest template; 1:N search is one matrix-vector product
    using ‖a−b‖² = ‖a‖² + ‖b‖² − 2a·b.

    A search may also look at each resident's mean template (the mean of
    their templates: a steadier picture of the face than any one photo;
    ``match.mean_template``). Means are derived here, never stored: the rows
    of :attr:`matrix` stay exactly the stored templates. They sit in the
    same buffer, after them, so the search is still one matrix product.
    """

    def __init__(self, residents: dict[str, Resident], owners: list[str], vectors: np.ndarray, version: str = "0",
                 fpir_cap: float | None = None):
        self.residents = residents
        self.version = version
        # The stricter match.fpir_target an admin's signed update set (kiosk.sync.updates): never loosened here.
        self.fpir_cap = fpir_cap
        order = np.argsort(np.asarray(owners, dtype=object).astype(str), kind="stable") if owners else np.array([], int)
        owners_sorted = [owners[i] for i in order]
        stored = np.asarray(vectors[order] if len(order) else np.zeros((0, DIMENSIONS)), dtype=np.float32)
        # Start index of each resident's block of rows.
        ids, starts = [], []
        for i, rid in enumerate(owners_sorted):
            if not ids or ids[-1] != rid:
                ids.append(rid)
                starts.append(i)
        self.ids = ids
        self.starts = np.asarray(starts, dtype=np.intp)
        means = np.add.reduceat(stored, self.starts, axis=0) / np.diff(np.append(self.starts, len(stored)))[:, None] \
            if ids else np.zeros((0, DIMENSIONS), np.float32)
        self._buffer = np.ascontiguousarray(np.vstack([stored, means]), dtype=np.float32)
        self.matrix = self._buffer[: len(stored)]
        self._sq_all = np.einsum("ij,ij->i", self._buffer, self._buffer)
        self.sq_norms = self._sq_all[: len(stored)]
        self.valid_until = np.asarray(
            [residents[r].valid_until if residents[r].valid_until is not None else np.inf for r in ids], dtype=np.float64
        )
        self.valid_from = np.asarray(
            [residents[r].valid_from if residents[r].valid_from is not None else -np.inf for r in ids], dtype=np.float64
        )

    def scrub(self) -> None:
        """Overwrite every template (and mean) in memory with zeros: a retired gallery keeps no faces."""
        self._buffer.fill(0)

    @classmethod
    def empty(cls) -> "Gallery":
        return cls({}, [], np.zeros((0, DIMENSIONS), np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        """The same SHA-256 as :meth:`GalleryStore.digest` of the rows this gallery was loaded from."""
        raw = np.ascontiguousarray(self.matrix, dtype="<f4").tobytes()
        size = self.matrix.shape[1] * 4
        ends = self.starts[1:].tolist() + [self.matrix.shape[0]]
        vectors = {rid: [raw[i * size : (i + 1) * size] for i in range(start, end)]
                   for rid, start, end in zip(self.ids, self.starts.tolist(), ends)}
        return gallery_digest(self.residents, vectors)

    @property
    def template_count(self) -> int:
        return self.matrix.shape[0]

    def resident_distances(self, descriptor: np.ndarray, now: float | None = None, *, means: bool = False) -> np.ndarray:
        """Distance from ``descriptor`` to each resident's nearest template (inf if not valid now).

        ``descriptor`` may also be a matrix of descriptors (one per row): then one row of distances each.
        ``means``: each resident's mean template counts as one of theirs.
        """
        q = np.asarray(descriptor, dtype=np.float32)
        qq = np.einsum("...j,...j->...", q, q)[..., None] if q.ndim == 2 else np.float32(q @ q)
        stored = len(self.matrix)
        rows = self._buffer if means else self.matrix
        d2 = (self._sq_all if means else self.sq_norms) + qq - 2.0 * (q @ rows.T)
        per = np.minimum.reduceat(d2[..., :stored], self.starts, axis=-1)
        if means:
            np.minimum(per, d2[..., stored:], out=per)
        np.maximum(per, 0, out=per)
        dist = np.sqrt(per, dtype=np.float32).astype(np.float64)
        t = time.time() if now is None else now
        dist[..., (self.valid_until <= t) | (self.valid_from > t)] = np.inf
        return dist

    def search(self, descriptor: np.ndarray, now: float | None = None, *, means: bool = False) -> Match:
        if not self.ids:
            return Match(None, float("inf"), None, float("inf"))
        r = rank(self.resident_distances(descriptor, now, means=means)[None, :])
        best, runner = int(r.best[0]), int(r.runner_up[0])
        if best < 0:
            return Match(None, float("inf"), None, float("inf"))
        r_id = self.ids[runner] if runner >= 0 else None
        return Match(self.ids[best], float(r.distance[0]), r_id, float(r.runner_up_distance[0]), float(r.cohort[0]))

    def rank(self, descriptors: np.ndarray, now: float | None = None, *, means: bool = False) -> Ranking:
        """:meth:`search` for many descriptors at once (one matrix product; for evaluation)."""
        if not self.ids:
            n = len(descriptors)
            return Ranking(np.full(n, -1), np.full(n, np.inf), np.full(n, -1), np.full(n, np.inf), np.full(n, np.nan))
        return rank(self.resident_distances(np.atleast_2d(descriptors), now, means=means))


def rank(dist: np.ndarray, cohort_size: int = COHORT_SIZE) -> Ranking:
    """Nearest, runner-up and cohort of each row of per-resident distances (inf: not a candidate)."""
    rows, n = dist.shape
    k = min(cohort_size + 1, n)
    idx = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(np.arange(n), (rows, n)).copy()
    near = np.take_along_axis(dist, idx, axis=1)
    order = np.argsort(near, axis=1, kind="stable")
    idx, near = np.take_along_axis(idx, order, axis=1), np.take_along_axis(near, order, axis=1)
    finite = np.isfinite(near)
    best = np.where(finite[:, 0], idx[:, 0], -1)
    d1 = np.where(finite[:, 0], near[:, 0], np.inf)
    if k > 1:
        ok2 = finite[:, 1] & finite[:, 0]
        runner = np.where(ok2, idx[:, 1], -1)
        d2 = np.where(ok2, near[:, 1], np.inf)
        others = np.where(finite[:, 1:], near[:, 1:], 0.0)
        count = finite[:, 1:].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cohort = np.where(count > 0, others.sum(axis=1) / count, np.nan)
    else:
        runner, d2, cohort = np.full(rows, -1), np.full(rows, np.inf), np.full(rows, np.nan)
    return Ranking(best, d1, runner, d2, cohort)


class GalleryStore:
    """Residents and sealed templates in the kiosk database."""

    def __init__(self, db: sqlite_utils.Database, cipher: TemplateCipher):
        self.db = db
        self.cipher = cipher

    def upsert_resident(self, resident: Resident, *, replace_templates: bool = False) -> None:
        now = time.time()
        with self.db.atomic():
            self._upsert(resident, now)
            if replace_templates:
                self.db.execute("DELETE FROM templates WHERE resident_id = ?", [resident.id])

    def _upsert(self, r: Resident, now: float) -> None:
        check_name(r.name)
        self.db.execute(
            "INSERT INTO residents(id, name, valid_from, valid_until, created_at, updated_at) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET name=excluded.name, valid_from=excluded.valid_from,"
            " valid_until=excluded.valid_until, updated_at=excluded.updated_at",
            [r.id, r.name, r.valid_from, r.valid_until, now, now],
        )

    def add_template(self, resident_id: str, vector: np.ndarray, source_sha256: str | None = None) -> int:
        blob = self.cipher.seal(vector, resident_id)
        with self.db.atomic():
            if source_sha256 and self.db.execute(
                "SELECT 1 FROM templates WHERE resident_id = ? AND source_sha256 = ?", [resident_id, source_sha256]
            ).fetchone():
                return 0  # this photo is already enrolled for this resident
            cur = self.db.execute(
                "INSERT INTO templates(resident_id, vector, source_sha256, created_at) VALUES (?,?,?,?)",
                [resident_id, blob, source_sha256, time.time()],
            )
            return cur.lastrowid

    def enroll(self, resident: Resident, vectors: list[tuple[np.ndarray, str | None]]) -> int:
        """Add a resident (or update their name) and templates in one transaction."""
        added = 0
        with self.db.atomic():
            self._upsert(resident, time.time())
            for vec, sha in vectors:
                added += 1 if self.add_template(resident.id, vec, sha) else 0
        return added

    def erase(self, resident_id: str) -> bool:
        with self.db.atomic():
            self.db.execute("DELETE FROM templates WHERE resident_id = ?", [resident_id])
            cur = self.db.execute("DELETE FROM residents WHERE id = ?", [resident_id])
        return cur.rowcount > 0

    def templates_of(self, resident_id: str) -> Templates:
        """One resident's templates: enrolled, and door templates oldest first (:mod:`kiosk.gallery.adapt`)."""
        enrolled, door = [], []
        for blob, visit, created in self.db.execute(
                "SELECT vector, door_visit, created_at FROM templates WHERE resident_id = ? ORDER BY id", [resident_id]):
            v = self.cipher.open(blob, resident_id)
            if visit is None:
                enrolled.append(v)
            else:
                door.append(DoorTemplate(v, created, visit))
        return Templates(np.vstack(enrolled) if enrolled else np.zeros((0, DIMENSIONS), np.float32), door)

    def admit_door_template(self, resident_id: str, vector: np.ndarray, visit: str, policy: AdaptPolicy,
                            now: float | None = None) -> Admission:
        """Add a door template from ``visit`` if ``policy`` admits it (the oldest door template goes when full).

        A resident with no enrolled template (or none at all) gets none: there is nothing to anchor it to.
        """
        now = time.time() if now is None else now
        with self.db.atomic():
            held = self.templates_of(resident_id)
            if not len(held.enrolled):
                return Admission(False, NOT_ANCHORED)
            if self.db.execute("SELECT 1 FROM templates WHERE door_visit = ?", [visit]).fetchone():
                return Admission(False, NOTHING_NEW)  # this visit gave one already (to whomever)
            a = policy.admit(held, vector, now, visit)
            if a.admitted:
                if a.replaced is not None:
                    self.db.execute("DELETE FROM templates WHERE door_visit = ?", [a.replaced.source])
                self._insert_door_template(resident_id, vector, now, visit)
        return a

    def _insert_door_template(self, resident_id: str, vector: np.ndarray, added_at: float, visit: str) -> None:
        self.db.execute("INSERT INTO templates(resident_id, vector, source_sha256, created_at, door_visit)"
                        " VALUES (?,?,NULL,?,?)", [resident_id, self.cipher.seal(vector, resident_id), added_at, visit])

    def withdraw_door_template(self, resident_id: str, visit: str, replaced: DoorTemplate | None) -> None:
        """Take back :meth:`admit_door_template`: the template from ``visit`` off, the one it replaced back."""
        with self.db.atomic():
            self.db.execute("DELETE FROM templates WHERE door_visit = ?", [visit])
            if replaced is not None:
                self._insert_door_template(resident_id, replaced.vector, replaced.added_at, replaced.source)

    def drop_templates(self, resident_id: str, sources: list[str]) -> None:
        """Take off the resident's templates enrolled from these sources (their SHA-256 as :meth:`enroll` got them)."""
        with self.db.atomic():
            for source in sources:
                self.db.execute("DELETE FROM templates WHERE resident_id = ? AND source_sha256 = ?", [resident_id, source])

    def door_templates(self, resident_id: str | None = None) -> list[tuple[str, str, float]]:
        """Every door template as (resident id, visit, added at), oldest first."""
        sql = "SELECT resident_id, door_visit, created_at FROM templates WHERE door_visit IS NOT NULL"
        args = []
        if resident_id is not None:
            sql += " AND resident_id = ?"
            args.append(resident_id)
        return [(r, v, float(t)) for r, v, t in self.db.execute(sql + " ORDER BY created_at, id", args)]

    def revoke_door_template(self, visit: str) -> str | None:
        """Take off the door template from ``visit``; whose it was, or None if there is none."""
        with self.db.atomic():
            row = self.db.execute("SELECT resident_id FROM templates WHERE door_visit = ?", [visit]).fetchone()
            if row is not None:
                self.db.execute("DELETE FROM templates WHERE door_visit = ?", [visit])
        return row[0] if row else None

    def residents(self) -> dict[str, Resident]:
        rows = self.db.execute("SELECT id, name, valid_from, valid_until FROM residents ORDER BY id").fetchall()
        return {r[0]: Resident(*r) for r in rows}

    def load(self) -> Gallery:
        """Decrypt every template into a new in-memory :class:`Gallery`, all of it read from one snapshot of the
        database (an update another connection commits meanwhile is in it wholly or not at all)."""
        own = not self.db.conn.in_transaction
        if own:
            self.db.execute("BEGIN")
        try:
            residents = self.residents()
            owners, vecs = [], []
            for rid, blob in self.db.execute("SELECT resident_id, vector FROM templates ORDER BY resident_id, id"):
                owners.append(rid)
                vecs.append(self.cipher.open(blob, rid))
            version, cap = self.version(), self.fpir_cap()
        finally:
            if own:
                self.db.execute("COMMIT")
        matrix = np.vstack(vecs) if vecs else np.zeros((0, DIMENSIONS), np.float32)
        g = Gallery(residents, owners, matrix, version=version, fpir_cap=cap)
        log.info("gallery loaded: %d residents, %d templates, version %s", len(g), g.template_count, g.version)
        return g

    def version(self) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'gallery_version'").fetchone()
        return row[0] if row else "0"

    def fpir_cap(self) -> float | None:
        """The stricter target a signed gallery update set (None: none)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [FPIR_CAP_KEY]).fetchone()
        return float(row[0]) if row else None

    def digest(self) -> str:
        """SHA-256 over residents and template vectors (not ciphertexts): see :func:`gallery_digest`."""
        vectors: dict[str, list[bytes]] = {}
        for rid, blob in self.db.execute("SELECT resident_id, vector FROM templates"):
            vectors.setdefault(rid, []).append(self.cipher.open(blob, rid).tobytes())
        return gallery_digest(self.residents(), vectors)



def open_store(config) -> GalleryStore:
    """The gallery store of the database and template key named by ``config``."""
    from ..db import open_database

    db = open_database(config.database_path)
    return GalleryStore(db, TemplateCipher.from_file(config.state_path(config.storage.template_key)))
