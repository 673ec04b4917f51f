"""Timing each stage of the pipeline on this device, on its own frames.

Every stage is timed per call on the frames the configured source gives (a
camera, or a clip with ``--source``): capture, the motion gate, detection at
``detect.scale`` and at each candidate far scale, a descriptor, liveness per
frame, a gallery search at this device's gallery size, a QR look and the
outbox commit that comes before the door. The parts are built by
:class:`Stages` (the real ones by default; tests hand it fakes that cost
what they are told) and timed with the ``clock`` given.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..capture.base import Frame, FrameSource
from ..config import DetectSettings, KioskConfig, LivenessSettings, MotionSettings
from ..errors import CameraUnavailable, KioskError, SourceExhausted
from ..match.decide import Decision, Outcome, VoteBox
from ..match.detect import Box, Face, to_grey
from ..gallery.store import Gallery, Resident
from ..gallery.templates import DIMENSIONS
from ..match.track import Track

log = logging.getLogger(__name__)

#: dlib's HOG detector finds faces down to its 80-pixel window (per upsampling step: half that).
HOG_WINDOW_PX = 80
#: Far scales tried, as fractions of the largest useful one.
FAR_STEPS = (1.0, 0.85, 0.7, 0.6)


def _real_source(cfg: KioskConfig) -> FrameSource:
    from ..capture import open_source

    return open_source(cfg.capture.source, cfg.capture)


def _real_motion(settings: MotionSettings):
    from ..match.motion import MotionGate

    return MotionGate(settings)


def _real_detector(settings: DetectSettings, scale: float):
    from ..match.detect import FaceDetector

    return FaceDetector(settings, scale=scale)


def _real_embedder(settings: DetectSettings):
    from ..match.embed import Embedder

    return Embedder(settings)


def _real_liveness(settings: LivenessSettings):
    from ..match.liveness import Liveness

    return Liveness(settings)


def _real_qr(image: np.ndarray) -> list[bytes]:
    from ..capture.qr import decode_qr

    return decode_qr(image, thorough=False)  # as the daemon looks, every Nth frame


def _real_outbox(path: Path, cfg: KioskConfig):
    from ..sync.events.outbox import Outbox

    return Outbox.open(path, site=cfg.device.site, device=cfg.device.device_id, settings=cfg.outbox)


@dataclass
class Stages:
    """What the bench builds and times; each field makes one part (the real one by default)."""

    source: Callable[[KioskConfig], FrameSource] = _real_source
    motion: Callable[[MotionSettings], object] = _real_motion
    detector: Callable[[DetectSettings, float], object] = _real_detector
    embedder: Callable[[DetectSettings], object] = _real_embedder
    liveness: Callable[[LivenessSettings], object] = _real_liveness
    qr: Callable[[np.ndarray], list] = _real_qr
    outbox: Callable[[Path, KioskConfig], object] = _real_outbox


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call of one stage: median and 90th percentile over ``calls``."""

    median_ms: float
    p90_ms: float
    calls: int

    @classmethod
    def of(cls, seconds: list[float]) -> "Timing":
        if not seconds:
            return cls(0.0, 0.0, 0)
        ms = np.asarray(seconds) * 1000
        return cls(round(float(np.median(ms)), 3), round(float(np.percentile(ms, 90)), 3), len(ms))


@dataclass
class Costs:
    """What one run of the bench measured."""

    source: str
    live: bool  # a camera (its frame rate is a ceiling) or a file (decoded as fast as it goes)
    frame_size: tuple[int, int]
    frames: int
    capture: Timing  # wall time per read: a camera's frame interval, a file's decoding
    capture_cpu: Timing  # CPU time per read (what capturing costs the device)
    delivered_fps: float
    grey: Timing
    motion: Timing
    near: Timing  # detection at detect.scale
    far: dict[float, Timing]  # detection at each far scale tried
    descriptor: Timing
    liveness: Timing | None  # None: liveness is off
    search: Timing
    qr: Timing | None  # None: residents' QR codes are off (or there is no back-end key)
    commit: Timing
    gallery_residents: int
    gallery_templates: int
    gallery_kind: str  # "database", "synthetic" or "synthetic (same size as the database)"
    faces_near: int  # frames in which the near pass found a face
    faces_far: int  # frames in which the largest far pass found a face
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        d = asdict(self)
        d["far"] = {f"{s:g}": asdict(t) for s, t in self.far.items()}
        return d


def useful_far_scale(settings: DetectSettings) -> float:
    """The largest far scale worth running: a larger one only finds faces the quality gate refuses
    (narrower than ``detect.min_face_px``)."""
    return round(min(2.0, HOG_WINDOW_PX / (settings.min_face_px * 2**settings.upsample)), 2)


def far_scales(settings: DetectSettings) -> list[float]:
    """The far scales to time, largest first: steps down from :func:`useful_far_scale`, each above
    ``detect.scale``, and the configured one (to compare with, even if it is not useful)."""
    largest = useful_far_scale(settings)
    scales = {round(largest * f, 2) for f in FAR_STEPS}
    if settings.far_scale > settings.scale:
        scales.add(round(settings.far_scale, 2))
    return sorted((s for s in scales if s > settings.scale * 1.05), reverse=True)


def smallest_face_px(settings: DetectSettings, scale: float) -> int:
    """The smallest face (full-frame pixels) a pass at ``scale`` finds."""
    return round(HOG_WINDOW_PX / (scale * 2**settings.upsample))


def _timed(clock, fn, *args):
    t0 = clock()
    out = fn(*args)
    return out, clock() - t0


def measure(
    cfg: KioskConfig,
    *,
    frames: int = 45,
    far_frames: int = 15,
    gallery: Gallery | None = None,
    gallery_kind: str = "database",
    stages: Stages | None = None,
    clock: Callable[[], float] = time.perf_counter,
    capture_clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.thread_time,
    say: Callable[[str], None] = lambda text: None,
) -> Costs:
    """Time every stage on ``frames`` frames of the configured source (see the module docstring).

    ``clock`` times the stages (wall time by default: what a resident waits;
    ``time.thread_time`` on a machine shared with other work), ``capture_clock``
    the frame intervals and ``cpu_clock`` what capturing costs the CPU. Each
    stage is called once untimed first (models allocate on their first call).
    """
    st = stages or Stages()
    notes: list[str] = []
    say(f"capture: reading {frames} frames from {cfg.capture.source}")
    shots, walls, cpus, live = _capture(st, cfg, frames, capture_clock, cpu_clock)
    h, w = shots[0].image.shape[:2]
    steady = walls[1:] or walls  # a camera's first read includes starting it
    delivered = len(steady) / sum(steady) if sum(steady) > 0 else float("inf")
    if not live:
        notes.append("the source is a file: capture is its decoding, not a camera's frame rate")

    greys, t_grey = [], []
    for f in shots:
        g, dt = _timed(clock, to_grey, f.image)
        greys.append(g)
        t_grey.append(dt)

    say("motion gate")
    gate = st.motion(cfg.motion.model_copy(update={"enabled": True}))
    t_motion = [_timed(clock, gate.update, f)[1] for f in shots]

    say(f"detection at detect.scale = {cfg.detect.scale:g}")
    found, t_near = _detect(st, cfg, cfg.detect.scale, shots, greys, clock)
    far: dict[float, Timing] = {}
    far_found: list[list[Face]] = []
    for scale in far_scales(cfg.detect):
        say(f"far pass at {scale:g} (faces from {smallest_face_px(cfg.detect, scale)} px)")
        faces, times = _detect(st, cfg, scale, shots[:far_frames], greys, clock)
        far_found = far_found or faces  # the largest scale's
        far[scale] = Timing.of(times)
    looks = _looks(cfg, shots, found, far_found, notes)

    say("descriptor")
    emb = st.embedder(cfg.detect)
    emb.embed(cv2.cvtColor(shots[looks[0][0]].image, cv2.COLOR_BGR2RGB), looks[0][1])  # warm-up
    descriptors, t_desc = [], []
    for k, face in looks[:: max(1, len(looks) // 8)][:8]:
        t0 = clock()
        rgb = cv2.cvtColor(shots[k].image, cv2.COLOR_BGR2RGB)
        descriptors.append(emb.embed(rgb, face))
        t_desc.append(clock() - t0)

    t_live = None
    if cfg.liveness.enabled:
        say("liveness")
        check = st.liveness(cfg.liveness)
        track = Track(id=1, box=looks[0][1].box, first_seen=shots[looks[0][0]].timestamp,
                      last_seen=shots[looks[0][0]].timestamp, votes=VoteBox(cfg.match))
        t_live = []
        for k, face in looks[:30]:
            track.box, track.last_seen = face.box, shots[k].timestamp
            t_live.append(_timed(clock, check.observe, track, shots[k], greys[k], face)[1])

    say(f"gallery search ({len(gallery) if gallery is not None else 0} residents)")
    if gallery is None:
        gallery = Gallery.empty()
    queries = descriptors or [np.zeros(DIMENSIONS, np.float32)]
    t_search = [_timed(clock, gallery.search, queries[i % len(queries)])[1] for i in range(50)]

    t_qr = None
    if cfg.qr_credential.enabled and _backend_key(cfg).is_file():
        say("QR look")
        t_qr = [_timed(clock, st.qr, f.image)[1] for f in shots[:15]]
    elif cfg.qr_credential.enabled:
        notes.append(f"residents' QR codes are off here: no back-end key at {_backend_key(cfg)}")

    say("outbox commit (on a temporary database)")
    t_commit = _commit_times(st, cfg, clock)

    return Costs(
        source=cfg.capture.source, live=live, frame_size=(w, h), frames=len(shots),
        capture=Timing.of(steady), capture_cpu=Timing.of(cpus[1:] or cpus),
        delivered_fps=round(delivered, 2) if np.isfinite(delivered) else 1000.0,
        grey=Timing.of(t_grey), motion=Timing.of(t_motion), near=Timing.of(t_near), far=far,
        descriptor=Timing.of(t_desc), liveness=Timing.of(t_live) if t_live is not None else None,
        search=Timing.of(t_search), qr=Timing.of(t_qr) if t_qr is not None else None,
        commit=Timing.of(t_commit),
        gallery_residents=len(gallery), gallery_templates=gallery.template_count, gallery_kind=gallery_kind,
        faces_near=sum(1 for fs in found if fs), faces_far=sum(1 for fs in far_found if fs), notes=notes,
    )


def _detect(st: Stages, cfg: KioskConfig, scale: float, shots: list[Frame], greys: list, clock):
    """Each frame's faces at ``scale``, and the time each detection took."""
    det = st.detector(cfg.detect, scale)
    det.detect(shots[0].image, greys[0])  # warm-up
    found, times = [], []
    for f, g in zip(shots, greys):
        faces, dt = _timed(clock, det.detect, f.image, g)
        found.append(faces)
        times.append(dt)
    return found, times


def _looks(cfg: KioskConfig, shots: list[Frame], near: list[list[Face]], far: list[list[Face]],
           notes: list[str]) -> list[tuple[int, Face]]:
    """The faces the later stages work on, as (frame number, face): the near pass's, else the far pass's;
    with no face at all, a box in the middle of the frame (landmarks and descriptor cost about the same)."""
    looks = []
    for k, faces in enumerate(near):
        faces = faces or (far[k] if k < len(far) else [])
        if faces:
            looks.append((k, faces[0]))
    if looks:
        return looks
    notes.append("no face in the frames: descriptor and liveness were timed on a box in the middle of the "
                 "frame (they cost about the same); stand in front of the camera for a real face")
    h, w = shots[0].image.shape[:2]
    side = max(cfg.detect.min_face_px, min(w, h) // 3)
    box = Box(top=(h - side) // 2, right=(w + side) // 2, bottom=(h + side) // 2, left=(w - side) // 2)
    return [(k, Face(box=box, score=0.0, sharpness=100.0, edge_distance=0.2)) for k in range(len(shots))]


def _capture(st: Stages, cfg: KioskConfig, frames: int, clock, cpu_clock):
    source = st.source(cfg)
    shots: list[Frame] = []
    walls: list[float] = []
    cpus: list[float] = []
    try:
        try:
            source.start()
        except CameraUnavailable as e:
            raise CameraUnavailable(f"{e} (the bench needs the camera to itself: is the kiosk daemon running? "
                                    "sudo systemctl stop kiosk)") from e
        for _ in range(frames):
            c0, t0 = cpu_clock(), clock()
            try:
                frame = source.read()
            except SourceExhausted:
                break
            walls.append(clock() - t0)
            cpus.append(cpu_clock() - c0)
            shots.append(frame)
    finally:
        source.close()
    if not shots:
        raise KioskError(f"{cfg.capture.source}: no frames to measure with")
    return shots, walls, cpus, bool(getattr(source, "live", True))


def _backend_key(cfg: KioskConfig) -> Path:
    from ..sync.keys import resolve

    return resolve(cfg.keys.backend_public_key, cfg.device.state_dir)


def _commit_times(st: Stages, cfg: KioskConfig, clock, n: int = 10) -> list[float]:
    """A committed check-in is durable before the door opens: time that on a throw-away database."""
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        outbox = st.outbox(Path(tmp) / "bench.db", cfg)
        try:
            d = Decision(Outcome.ACCEPTED, 1, resident_id="bench", distance=0.3, margin=0.2, frames=3)
            return [_timed(clock, outbox.commit, d)[1] for _ in range(n)]
        finally:
            outbox.close()


# -- the gallery to search ----------------------------------------------------------


def device_gallery(cfg: KioskConfig) -> tuple[Gallery | None, str, int, int]:
    """The device's gallery, read without writing anything: (gallery or None, kind, residents, templates).

    The database (and its write-ahead log) is copied to a temporary folder and
    read there: even a read-only SQLite connection updates the ``-shm`` file
    beside a database in WAL mode. The gallery is None when its template key
    cannot be opened by this user; the counts then still say its size.
    """
    path = cfg.database_path
    if not path.exists():
        return None, "none", 0, 0
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        if Path(f"{path}-wal").exists():
            shutil.copyfile(f"{path}-wal", f"{copy}-wal")
        conn = sqlite3.connect(copy, timeout=5)
        try:
            residents = conn.execute("SELECT count(*) FROM residents").fetchone()[0]
            templates = conn.execute("SELECT count(*) FROM templates").fetchone()[0]
            try:
                import sqlite_utils

                from ..gallery.store import GalleryStore
                from ..gallery.templates import TemplateCipher

                cipher = TemplateCipher.from_file(cfg.state_path(cfg.storage.template_key), create=False)
                return GalleryStore(sqlite_utils.Database(conn), cipher).load(), "database", residents, templates
            except (KioskError, OSError) as e:
                log.info("gallery not readable here (%s): a synthetic one of its size is searched", e)
                return None, "unreadable", residents, templates
        except sqlite3.DatabaseError as e:
            raise KioskError(f"{path}: {e} (is the daemon writing to it? stop it first)") from e
        finally:
            conn.close()


def synthetic_gallery(residents: int, templates: int | None = None, seed: int = 0) -> Gallery:
    """Random templates for ``residents`` residents (``templates`` in all; 3 each by default): search costs the same."""
    templates = templates or 3 * residents
    rng = np.random.default_rng(seed)
    owners = [f"bench-{i % max(1, residents):06d}" for i in range(templates if residents else 0)]
    vectors = (rng.normal(size=(len(owners), DIMENSIONS)) * 0.09).astype(np.float32)
    people = {rid: Resident(rid, rid) for rid in set(owners)}
    return Gallery(people, owners, vectors, version="bench")
