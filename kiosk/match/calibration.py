"""The operating point that follows the gallery: threshold and margin for N residents at a target FPIR.

Every resident added is one more face a stranger can be taken for, so the
numbers that keep strangers out of a gallery of 10 let too many in at
3,000. ``match.fpir_target`` says how many strangers' visits may be
accepted as a resident; the calibration shipped beside this module
(``calibration.json``, made by ``scripts/calibrate --open-set``, see
docs/recognition.md) says, per gallery size and target, which thresholds
give that and what FNIR they cost. The kiosk looks them up for its gallery's
size at start, on SIGHUP and on every gallery update.

A gallery between two calibrated sizes takes the larger size's numbers
(stricter). A gallery larger than any calibrated size takes the largest
size's numbers for a target scaled down in proportion: a stranger's chance
of resembling someone grows at most in proportion to N.

The size is counted in templates (issue 23): the calibration enrolled each
resident with ``protocol.enroll_photos`` templates, and a gallery whose
residents hold more (door templates) gives a stranger more to pass, so it
takes the point of its *effective* size
(:func:`kiosk.gallery.adapt.effective_residents`).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, fields, replace

from ..config import MatchSettings
from ..errors import ConfigError
from ..siteestimate import CALIBRATION_FILE
from .decide import OperatingPoint
from ..gallery.adapt import effective_residents
from ..gallery.store import COHORT_SIZE
from .models import MODEL_ID

log = logging.getLogger(__name__)

#: CALIBRATION_FILE: the calibration the package ships (one definition, also read without numpy there).
FORMAT = 1


@dataclass(frozen=True)
class CalibratedPoint:
    """One cell of the calibration: the thresholds for a gallery size and target, and what they gave."""

    residents: int
    fpir_target: float
    threshold: float
    visit_threshold: float
    fpir: float  # per visit, measured
    fnir: float  # per visit, measured
    fpir_single: float
    fnir_single: float
    wrong: float  # per visit: accepted as another resident
    non_mated: int  # stranger visits the FPIR was measured on
    resolvable: bool  # enough stranger visits (and single photos) to measure the target at all
    # Strangers' visits whose gap is at most delta, as (delta, share) pairs (kiosk.evaluation.nearmiss);
    # None in a calibration made before it was measured.
    near_miss: tuple[tuple[float, float], ...] | None = None

    def near_miss_json(self) -> dict | None:
        """The profile as the calibration file holds it (what :mod:`kiosk.siteestimate` reads)."""
        if not self.near_miss:
            return None
        return {"deltas": [d for d, _ in self.near_miss], "share": [q for _, q in self.near_miss]}


@dataclass(frozen=True)
class Calibration:
    margin: float
    cohort_weight: float
    cohort_anchor: float
    points: tuple[CalibratedPoint, ...]
    source: str  # what it was measured on
    per_resident: float = 3.0  # templates each resident was enrolled with (protocol.enroll_photos)

    @property
    def sizes(self) -> list[int]:
        return sorted({p.residents for p in self.points})

    def at(self, residents: int, target: float) -> tuple[CalibratedPoint, int, float, bool]:
        """The point for a gallery of ``residents`` at ``target``.

        Returns (point, calibrated size it comes from, the target asked of that size,
        whether that target is met there). Not met: the strictest point of that size.
        """
        sizes = self.sizes
        basis = next((s for s in sizes if s >= residents), sizes[-1])
        asked = target if residents <= basis else target * basis / residents
        cells = [p for p in self.points if p.residents == basis]
        fitting = [p for p in cells if p.resolvable and p.fpir_target <= asked * (1 + 1e-9)]
        if fitting:
            return max(fitting, key=lambda p: p.fpir_target), basis, asked, True
        return min(cells, key=lambda p: (p.fpir_target, p.threshold)), basis, asked, False

    @classmethod
    def from_json(cls, data: dict, source: str = "") -> "Calibration":
        if data.get("format") != FORMAT:
            raise ConfigError(f"calibration {source}: format {data.get('format')!r}, expected {FORMAT}")
        if data.get("model") != MODEL_ID:
            raise ConfigError(f"calibration {source}: measured with model {data.get('model')!r}, the kiosk runs {MODEL_ID!r}")
        rule = data["rule"]
        if rule.get("cohort_size", COHORT_SIZE) != COHORT_SIZE:
            raise ConfigError(f"calibration {source}: cohort of {rule['cohort_size']}, the gallery uses {COHORT_SIZE}")
        fields = CalibratedPoint.__dataclass_fields__
        points = tuple(CalibratedPoint(**{k: p[k] for k in fields if k != "near_miss"}, near_miss=_near_miss(p))
                       for p in data["points"])
        if not points:
            raise ConfigError(f"calibration {source}: no points")
        per_resident = float(data.get("protocol", {}).get("enroll_photos", 3))
        return cls(rule["margin"], rule["cohort_weight"], rule["cohort_anchor"], points, data.get("data", source),
                   per_resident)


def _near_miss(point: dict) -> tuple[tuple[float, float], ...] | None:
    nm = point.get("near_miss")
    if not nm:
        return None
    if len(nm["deltas"]) != len(nm["share"]):
        raise ConfigError("calibration: a near_miss profile with as many deltas as shares")
    return tuple((float(d), float(q)) for d, q in zip(nm["deltas"], nm["share"]))


@functools.cache
def shipped() -> Calibration:
    """The calibration in the package (read once)."""
    try:
        data = json.loads(CALIBRATION_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{CALIBRATION_FILE}: cannot read the calibration: {e}") from e
    return Calibration.from_json(data, str(CALIBRATION_FILE))


@dataclass(frozen=True)
class GalleryPoint(OperatingPoint):
    """An operating point as :func:`operating_point` chose it, with the templates it counted."""

    templates: int | None = None  # the gallery's templates, when they were given
    effective_residents: int = 0  # the size the calibration was read at; 0: the same as ``residents``


def operating_point(settings: MatchSettings, residents: int, calibration: Calibration | None = None,
                    cap: float | None = None, templates: int | None = None) -> GalleryPoint:
    """The rule's numbers for a gallery of ``residents`` under ``settings``.

    ``match.fpir_target = 0``: the fixed ``threshold``, ``margin`` and
    ``visit_threshold``. Otherwise the calibrated point. Its ``face_alone``
    and ``second_factor`` follow ``match.second_factor``: "off" lets a face
    open the door by itself always; "auto" asks for a QR credential as the
    second factor only where the target is not met at this size (a face the
    strict point accepts still opens the door where the calibration can
    vouch for its FPIR); "always" never lets a face open it alone.

    ``cap``: a stricter target from a signed gallery update; only ever tightens (a fixed threshold ignores it).

    ``templates``: the gallery's template count. The calibrated point is then read (and its FPIR scaled) at the
    gallery's effective size, never less than ``residents``; a fixed threshold ignores it.
    """
    if cap is not None and 0 < cap < settings.fpir_target:
        settings = settings.model_copy(update={"fpir_target": cap})
    if settings.fpir_target <= 0:
        fixed = OperatingPoint.fixed(settings)
        fixed = GalleryPoint(**{f.name: getattr(fixed, f.name) for f in fields(fixed)})
        return _with_policy(fixed, settings, met=True, fpir_ok=True)
    cal = calibration or shipped()
    size = residents if templates is None else effective_residents(residents, templates, cal.per_resident)
    p, basis, asked, fpir_ok = cal.at(size, settings.fpir_target)
    scale = size / basis if size > basis else 1.0
    fpir = min(1.0, p.fpir * scale)
    met = fpir_ok and p.fnir <= settings.fnir_limit
    point = GalleryPoint(
        threshold=p.threshold, margin=cal.margin, visit_threshold=p.visit_threshold,
        cohort_weight=cal.cohort_weight, cohort_anchor=cal.cohort_anchor, source="calibration",
        residents=residents, fpir_target=settings.fpir_target, fpir=fpir, fnir=p.fnir,
        calibrated_size=basis, templates=templates, effective_residents=size if size != residents else 0,
    )
    return _with_policy(point, settings, met=met, fpir_ok=fpir_ok)


def _with_policy(point: GalleryPoint, settings: MatchSettings, *, met: bool, fpir_ok: bool) -> GalleryPoint:
    mode = settings.second_factor
    second = mode == "always" or (mode == "auto" and not met)
    face_alone = mode != "always" and (mode == "off" or fpir_ok)
    return replace(point, met=met, second_factor=second, face_alone=face_alone)


def summary(point: OperatingPoint) -> str:
    """One line for the status topic, the journal and ``kiosk selftest``."""
    from .decide import percent

    if point.source != "calibration":
        line = f"fixed threshold {point.threshold:.3f}, margin {point.margin:.3f} (match.fpir_target = 0: not calibrated)"
    else:
        counted = getattr(point, "effective_residents", 0)
        sized = f"{point.residents} residents"
        if counted > (point.residents or 0):
            sized += f" ({point.templates} templates, counted as {counted})"
        line = (f"{sized}: expected FPIR {percent(point.fpir)} per visit "
                f"(target {percent(point.fpir_target)}), FNIR {percent(point.fnir)}")
        if not point.met:
            line += "; the target is NOT met at this size"
    if point.second_factor:
        line += "; QR credential required as second factor" + ("" if point.face_alone else " for every visit")
    elif not point.met:
        line += " (match.second_factor = \"auto\" would ask for the QR credential)"
    return line
