"""Open-set 1:N evaluation: is this one of my N residents, and which, or nobody?

The protocol, on photos labelled by identity (``DIR/<identity>/*``):

- Identities are split into ``folds`` by a hash of their name. In each fold,
  that fold's people are strangers, never enrolled; everyone else with at
  least ``enroll_photos`` photos is enrolled from their first ones (those
  with exactly that many are distractors: enrolled, never probed). People
  with fewer photos are strangers in every fold: a gallery where some
  residents had fewer photos than others would understate FPIR, since a
  resident enrolled from more photos (and their mean) resembles more
  strangers. ``mixed`` enrolls them too, from what they have (the protocol
  of issue 12's first measurements).
- Single probes are the enrolled people's other photos (mated) and every
  photo of a stranger (non-mated). A visit is ``visit_photos`` of one
  person's probe photos, judged as the door judges a visit: its
  descriptors vote and their mean is searched too.
- For each gallery size N, the enrolled people are dealt into disjoint
  galleries of N (at most ``max_galleries`` per fold); in each, a probe is
  mated when its person is in that gallery and non-mated otherwise (a fold
  stranger, or someone enrolled in another gallery).

Every search is kept (:class:`Trials`), so that any operating point can be
judged afterwards without searching again: :mod:`kiosk.evaluation.rates`.
The galleries are :class:`~kiosk.gallery.store.Gallery` objects searched as
the kiosk searches them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass

import numpy as np

from ..gallery.store import Gallery, Resident, rank
from .pairs import Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    enroll_photos: int = 1
    visit_photos: int = 2
    folds: int = 5
    sizes: tuple[int, ...] = (100, 1000, 0)  # 0: everyone enrolled in the fold
    max_photos: int = 20  # per person (a few people have over a hundred)
    max_visits: int = 10  # per person
    max_galleries: int = 20  # per size and fold
    mean_template: bool = False  # search each resident's mean template too
    mixed: bool = False  # enroll people with fewer photos too (from what they have)
    min_photos: int = 0  # enroll only people with at least this many photos (0: enroll_photos)
    probe_from: int = 0  # their probes start at this photo (0: right after the enrollment photos)
    seed: int = 0

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class Trials:
    """Every search at one gallery size: one row per single probe or visit and gallery.

    Resident indices are global within a fold's enrolled list, offset by fold
    (so they never collide across folds); ``truth`` is -1 for a non-mated row.
    """

    size: int
    galleries: int
    residents: np.ndarray  # actual gallery size per row
    # single photos
    s_truth: np.ndarray
    s_best: np.ndarray
    s_distance: np.ndarray
    s_margin: np.ndarray
    s_cohort: np.ndarray
    # visits: the mean's search, and the single votes of its photos (columns)
    v_truth: np.ndarray
    v_best: np.ndarray
    v_distance: np.ndarray
    v_margin: np.ndarray
    v_cohort: np.ndarray
    votes_best: np.ndarray
    votes_distance: np.ndarray
    votes_margin: np.ndarray
    votes_cohort: np.ndarray
    v_residents: np.ndarray
    # Stored templates of each resident (by global index): a gallery mixes residents enrolled from
    # k photos with distractors who had fewer (see kiosk.evaluation.calibration).
    templates: np.ndarray
    # Which photo each single probe is (an index into :func:`photos_of`'s order), and each visit's photos:
    # for judging by the probe's quality (kiosk.evaluation.quality).
    s_photo: np.ndarray | None = None
    votes_photo: np.ndarray | None = None

    @classmethod
    def pooled(cls, parts: list["Trials"]) -> "Trials":
        """Trials of one size from several runs (e.g. seeds) as one; resident indices kept apart."""
        out: dict = {}
        offset = 0
        for t in parts:
            shift = lambda a: np.where(a >= 0, a + offset, a)  # noqa: E731
            for k in cls.__dataclass_fields__:
                if k in ("size", "galleries", "templates") or getattr(parts[0], k) is None:
                    continue
                a = getattr(t, k)
                out.setdefault(k, []).append(shift(a) if k in _INDICES else a)
            out.setdefault("templates", []).append(t.templates)
            offset += len(t.templates)
        return cls(size=parts[0].size, galleries=sum(t.galleries for t in parts),
                   **{k: np.concatenate(v) for k, v in out.items()})

    @property
    def s_mated(self) -> np.ndarray:
        return self.s_truth >= 0

    @property
    def v_mated(self) -> np.ndarray:
        return self.v_truth >= 0


#: Trials fields that hold resident indices.
_INDICES = ("s_truth", "s_best", "v_truth", "v_best", "votes_best")


def fold_of(identity: str, folds: int, seed: int = 0) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{identity}".encode()).digest()[:8], "big") % folds


def people_of(samples: list[Sample], max_photos: int) -> dict[str, np.ndarray]:
    """Each identity's usable descriptors (byte-identical copies once, at most ``max_photos``), in file order."""
    return {k: np.vstack([np.asarray(s.vector, np.float32) for s in v]) for k, v in _used(samples, max_photos).items()}


def photos_of(samples: list[Sample], max_photos: int) -> list[Sample]:
    """The photos :func:`people_of` uses, in its order (identity, then file): ``Trials.s_photo`` indexes this."""
    return [s for v in _used(samples, max_photos).values() for s in v]


def _used(samples: list[Sample], max_photos: int) -> dict[str, list[Sample]]:
    seen: set[str] = set()
    out: dict[str, list[Sample]] = {}
    for s in samples:
        if s.vector is None or s.sha256 in seen:
            continue
        seen.add(s.sha256)
        rows = out.setdefault(s.identity, [])
        if len(rows) < max_photos:
            rows.append(s)
    return dict(sorted(out.items()))


def _galleries(n: int, size: int, rng: np.random.Generator, limit: int) -> list[np.ndarray]:
    if size <= 0 or size >= n:
        return [np.arange(n)]
    order = rng.permutation(n)
    return [np.sort(order[i * size : (i + 1) * size]) for i in range(min(limit, n // size))]


def _groups(count: int, size: int, limit: int) -> list[list[int]]:
    return [list(range(g * size, (g + 1) * size)) for g in range(min(limit, count // size))]


def run_trials(samples: list[Sample], protocol: Protocol, *, enroll_vectors: dict[str, np.ndarray] | None = None,
               progress=None) -> dict[int, Trials]:
    """Search every probe and visit of every fold at every size; see the module's docstring.

    :param enroll_vectors: other descriptors for enrollment photos (e.g. jittered), by sha256 order of
        each identity's first photos; identities missing from it use the probes' descriptors.
    """
    p = protocol
    people = people_of(samples, p.max_photos)
    names = list(people)
    first_photo = dict(zip(names, np.cumsum([0] + [len(people[u]) for u in names])))
    enough = max(p.enroll_photos, p.min_photos)
    enrollable = {u for u in names if p.mixed or len(people[u]) >= enough}
    first_probe = max(p.enroll_photos, p.probe_from)
    parts: dict[int, list[dict]] = {size: [] for size in p.sizes}
    templates: list[np.ndarray] = []
    offset = 0
    for fold in range(p.folds):
        strangers = [u for u in names if fold_of(u, p.folds, p.seed) == fold or u not in enrollable]
        enrolled = [u for u in names if fold_of(u, p.folds, p.seed) != fold and u in enrollable]
        owners: list[str] = []
        vectors = []
        for u in enrolled:
            mine = (enroll_vectors or {}).get(u, people[u])[: p.enroll_photos]
            owners += [u] * len(mine)
            vectors.append(mine)
        gallery = Gallery({u: Resident(u, u) for u in enrolled}, owners, np.vstack(vectors))
        column = {u: i for i, u in enumerate(gallery.ids)}
        templates.append(np.diff(np.append(gallery.starts, len(gallery.matrix))))
        # Probes: one row per single photo; visits are groups of those rows.
        rows, truth, visits, v_truth, photo = [], [], [], [], []
        for u in enrolled + strangers:
            skip = first_probe if u in column else 0
            mine = people[u][skip:]
            first = sum(len(r) for r in rows)
            rows.append(mine)
            photo.append(first_photo[u] + skip + np.arange(len(mine)))
            truth += [column.get(u, -1)] * len(mine)
            for g in _groups(len(mine), p.visit_photos, p.max_visits):
                visits.append([first + i for i in g])
                v_truth.append(column.get(u, -1))
        singles = np.vstack(rows)
        truth = np.asarray(truth)
        photo = np.concatenate(photo)
        visits = np.asarray(visits, dtype=np.intp).reshape(-1, p.visit_photos)
        v_truth = np.asarray(v_truth, dtype=np.intp)
        means = singles[visits].mean(axis=1) if len(visits) else np.zeros((0, singles.shape[1]), np.float32)
        d_single = _distances(gallery, singles, p.mean_template)
        d_visit = _distances(gallery, means, p.mean_template)
        rng = np.random.default_rng([p.seed, fold])
        for size in p.sizes:
            for cols in _galleries(len(gallery.ids), size, rng, p.max_galleries):
                parts[size].append(_judge(cols, d_single, truth, d_visit, visits, v_truth, offset)
                                   | {"s_photo": photo, "votes_photo": photo[visits]})
        offset += len(gallery.ids)
        if progress is not None:
            progress.update(1)
    counts = np.concatenate(templates) if templates else np.zeros(0, int)
    return {size: _stack(size, chunks, counts) for size, chunks in parts.items()}


def _distances(gallery: Gallery, probes: np.ndarray, means: bool, chunk: int = 2048) -> np.ndarray:
    out = np.empty((len(probes), len(gallery.ids)), np.float32)
    for i in range(0, len(probes), chunk):
        out[i : i + chunk] = gallery.resident_distances(probes[i : i + chunk], now=0.0, means=means)
    return out


def _judge(cols, d_single, truth, d_visit, visits, v_truth, offset) -> dict:
    inside = np.zeros(d_single.shape[1], bool)
    inside[cols] = True
    s = rank(d_single[:, cols].astype(np.float64))
    v = rank(d_visit[:, cols].astype(np.float64))
    glob = lambda local: np.where(local >= 0, cols[np.maximum(local, 0)] + offset, -1)  # noqa: E731
    s_best = glob(s.best)
    s_truth = np.where((truth >= 0) & inside[np.maximum(truth, 0)], truth + offset, -1)
    vt = np.where((v_truth >= 0) & inside[np.maximum(v_truth, 0)], v_truth + offset, -1)
    return dict(
        residents=np.full(len(truth), len(cols)), v_residents=np.full(len(v_truth), len(cols)),
        s_truth=s_truth, s_best=s_best, s_distance=s.distance, s_margin=s.margin, s_cohort=s.cohort,
        v_truth=vt, v_best=glob(v.best), v_distance=v.distance, v_margin=v.margin, v_cohort=v.cohort,
        votes_best=s_best[visits], votes_distance=s.distance[visits], votes_margin=s.margin[visits],
        votes_cohort=s.cohort[visits],
    )


def _stack(size: int, chunks: list[dict], templates: np.ndarray) -> Trials:
    keys = [k for k in Trials.__dataclass_fields__ if k not in ("size", "galleries", "templates")]
    return Trials(size=size, galleries=len(chunks), templates=templates,
                  **{k: np.concatenate([c[k] for c in chunks]) for k in keys})


def jittered_enrollment(samples, protocol, describer, cache) -> dict[str, np.ndarray]:
    """Jittered descriptors of each person's enrollment photos (the first usable ones, as the protocol takes them)."""
    from .descriptors import describe_samples  # it reads images: cv2

    seen, firsts = set(), {}
    for s in samples:
        if s.vector is None or s.sha256 in seen:
            continue
        seen.add(s.sha256)
        mine = firsts.setdefault(s.identity, [])
        if len(mine) < protocol.enroll_photos:
            mine.append(Sample(s.path, s.identity, s.sha256))
    counts = {ident: len(v) for ident, v in people_of(samples, protocol.max_photos).items()}
    enough = max(protocol.enroll_photos, protocol.min_photos)
    firsts = {ident: mine for ident, mine in firsts.items() if protocol.mixed or counts.get(ident, 0) >= enough}
    todo = [s for mine in firsts.values() for s in mine]
    describe_samples(todo, describer, cache, desc="jittered enrollment")
    plain = {s.sha256: s.vector for s in samples}
    # A photo the jittered pass finds no face in keeps its plain descriptor (the detector is the same: never).
    return {ident: np.vstack([s.vector if s.vector is not None else plain[s.sha256] for s in mine])
            for ident, mine in firsts.items()}
