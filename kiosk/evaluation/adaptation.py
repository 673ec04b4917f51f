"""Door templates measured on same-camera sessions: enroll from one session, adapt on a second, judge on a third.

For each set of sessions (:mod:`.sessions`) and each fold (a share of the people held out as strangers):

1. **Enroll** every resident from ``enroll_frames`` frames spread over their enrollment session (the calibration's
   protocol enrolls from 3 photos; the residents' mean template is searched too).
2. **Adapt**: the resident's visits of the adaptation session (``visit_frames`` consecutive frames each), in order,
   are decided by the kiosk's rule against the gallery as it stands. A visit the door is sure of twice over
   (:func:`kiosk.gallery.adapt.sure`: here the resident shows their QR credential when the face alone does not
   let them in, so every visit the candidate rule narrows to them is ``face+qr``; a face-alone visit counts only
   far inside the threshold, as if the active check passed) proposes its mean descriptor, which the policy
   (:class:`kiosk.gallery.adapt.AdaptPolicy`) admits or refuses.
3. **Judge** every person's visits of the judging sessions, residents (mated) and strangers (non-mated), by the
   kiosk's rule at the calibrated point, without and with the door templates. With them, the point is the one
   for the gallery's *effective* size (:func:`kiosk.gallery.adapt.effective_residents`): more templates give
   strangers more chances, so the calibration is read for as many residents' worth of templates.

**Poisoning** (:func:`poisoning`): every stranger of the fold shows one resident's stolen code at every visit of
their own adaptation session, as often as it takes, against each resident in turn; whatever the policy admits is
kept. Measured: how many door templates impostors planted, how far each lies from the resident's enrolled
templates (never beyond the anchor), and how many of the impostor's judging visits the face alone then lets in,
against before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..gallery.adapt import AdaptPolicy, Templates, effective_residents, sure
from ..gallery.store import Gallery, Resident
from ..match.decide import OperatingPoint
from .openset import Trials, _distances, _judge, _stack
from .rates import Rates, rates_of, visit_decisions
from .sessions import Person


@dataclass(frozen=True)
class Plan:
    enroll: str
    adapt: str
    judge: tuple[str, ...]
    enroll_frames: int = 3
    visit_frames: int = 2
    folds: int = 3


#: The sessions of each kind of set (:func:`kiosk.evaluation.sessions.load`).
PLANS = {
    # Enrolled in the office's light, adapted and judged at the door's own (adverse) light, and in the office's.
    "replay-attack": Plan("controlled_1", "adverse_1", ("adverse_2", "controlled_2")),
    # NUAA's sessions differ per subject: its first, second and third of those who have three.
    "nuaa": Plan("#1", "#2", ("#3",)),
    "photos": Plan("p1", "p2", ("p3",)),
}


def _session(person: Person, name: str) -> str | None:
    if name.startswith("#"):
        ordered = sorted(person.sessions)
        i = int(name[1:]) - 1
        return ordered[i] if i < len(ordered) else None
    return name if name in person.sessions else None


def usable(people: list[Person], plan: Plan) -> list[Person]:
    """People with every session of the plan, and enough frames with a face in each."""
    out = []
    for p in people:
        names = [_session(p, s) for s in (plan.enroll, plan.adapt, *plan.judge)]
        if all(n is not None for n in names) and len(p.vectors(names[0])) >= plan.enroll_frames and all(
                len(p.vectors(n)) >= plan.visit_frames for n in names[1:]):
            out.append(p)
    return out


def _of(p: Person, names) -> list[np.ndarray]:
    """The person's visits of the plan's sessions ``names``; someone without them (a stranger only), of all theirs."""
    got = [n for n in (_session(p, x) for x in names) if n is not None]
    return [p.vectors(n) for n in (got or sorted(p.sessions))]


def _names(p: Person, names) -> list[str]:
    """The plan's names of the sessions :func:`_of` gives (a session's own name where the plan has none)."""
    got = [x for x in names if _session(p, x) is not None]
    return got or sorted(p.sessions)


def _spread(vectors: np.ndarray, k: int) -> np.ndarray:
    return vectors[np.linspace(0, len(vectors) - 1, k).round().astype(int)]


def _visits(vectors: np.ndarray, k: int) -> list[np.ndarray]:
    return [vectors[i : i + k] for i in range(0, len(vectors) - k + 1, k)]


@dataclass
class FoldResult:
    without: Rates
    with_door: Rates
    residents: int
    effective: int
    point: OperatingPoint
    point_door: OperatingPoint
    door_templates: int
    proposed: int
    refused: dict[str, int] = field(default_factory=dict)
    by_session: dict[str, tuple[Rates, Rates]] = field(default_factory=dict)  # residents' visits: without, with


def _gallery(templates: dict[str, Templates], door: bool) -> Gallery:
    owners, rows = [], []
    for rid, t in templates.items():
        m = t.all() if door else t.enrolled
        owners += [rid] * len(m)
        rows.append(m)
    return Gallery({rid: Resident(rid, rid) for rid in templates}, owners, np.vstack(rows))


def _trials(gallery: Gallery, visits: list[np.ndarray], truth: list[int]) -> Trials:
    """The visits as open-set trials against every resident of ``gallery`` (truth: column, -1 for a stranger)."""
    frames = np.vstack(visits)
    k = len(visits[0])
    index = np.arange(len(frames)).reshape(-1, k)
    means = frames[index].mean(axis=1)
    cols = np.arange(len(gallery.ids))
    frame_truth = np.repeat(np.asarray(truth), k)
    part = _judge(cols, _distances(gallery, frames, True), frame_truth, _distances(gallery, means, True), index,
                  np.asarray(truth), 0) | {"s_photo": np.arange(len(frames)), "votes_photo": index}
    return _stack(len(cols), [part], np.diff(np.append(gallery.starts, len(gallery.matrix))))


def decide(point: OperatingPoint, gallery: Gallery, visits: list[np.ndarray], votes_k: int) -> np.ndarray:
    """The column each visit is accepted as (-1: not), by the kiosk's rule."""
    if not visits:
        return np.zeros(0, np.intp)
    return visit_decisions(point, _trials(gallery, visits, [-1] * len(visits)), votes_k)


def _face_distance(gallery: Gallery, visit: np.ndarray, column: int) -> float:
    """The visit's face to one resident: the nearest of its frames and its mean to any of their templates."""
    d = _distances(gallery, np.vstack([visit, visit.mean(axis=0)[None, :]]), True)[:, column]
    return float(d.min())


def adapt(templates: dict[str, Templates], sessions: dict[str, list[np.ndarray]], policy: AdaptPolicy,
          point: OperatingPoint, candidate_threshold: float, sure_margin: float, votes_k: int,
          claimed: dict[str, str] | None = None) -> tuple[int, dict[str, int]]:
    """Run the adaptation visits, in order, person by person: each sure visit proposes its mean descriptor for the
    resident it was confirmed as. ``claimed``: whose code each person shows (default: their own). Returns how many
    were proposed, and the refusals by reason."""
    proposed, refused = 0, {}
    claimed = claimed or {}
    clock = 0.0
    for person, visits in sessions.items():
        rid = claimed.get(person, person)
        for visit in visits:
            clock += 1.0
            gallery = _gallery(templates, True)
            column = gallery.ids.index(rid)
            distance = _face_distance(gallery, visit, column)
            common = dict(face_distance=distance, candidate_threshold=candidate_threshold, threshold=point.threshold,
                          sure_margin=sure_margin)
            # Sure by the face alone (far inside, the active check taken as passed); else the resident shows the
            # code too, and the credential confirms a face the candidate rule narrowed to them.
            alone = decide(point, gallery, [visit], votes_k)[0] == column and sure("face", active_check_passed=True,
                                                                                   **common)
            if not alone and not sure("face+qr", **common):
                refused["not_sure"] = refused.get("not_sure", 0) + 1
                continue
            proposed += 1
            got = policy.admit(templates[rid], visit.mean(axis=0), clock, f"{person}:{int(clock)}")
            if not got.admitted:
                refused[got.reason] = refused.get(got.reason, 0) + 1
    return proposed, refused


def _enrolled(residents: list[Person], plan: Plan) -> dict[str, Templates]:
    """Each resident's templates as enrolled: ``enroll_frames`` frames spread over their enrollment session."""
    return {p.identity: Templates(_spread(p.vectors(_session(p, plan.enroll)), plan.enroll_frames))
            for p in residents}


def run_fold(people: list[Person], strangers: set[str], plan: Plan, policy_for, point_for, votes_k: int,
             candidate_threshold: float, sure_margin: float, per_resident: float) -> FoldResult:
    """One fold: ``point_for(n)`` is the calibrated point for a gallery of n; ``policy_for(point)`` the policy."""
    residents = [p for p in people if p.identity not in strangers]
    templates = _enrolled(residents, plan)
    n = len(residents)
    point = point_for(n)
    policy = policy_for(point)
    sessions = {p.identity: _visits(p.vectors(_session(p, plan.adapt)), plan.visit_frames) for p in residents}
    proposed, refused = adapt(templates, sessions, policy, point, candidate_threshold, sure_margin, votes_k)
    count = sum(len(t.enrolled) + len(t.door) for t in templates.values())
    effective = effective_residents(n, count, per_resident)
    point_door = point_for(effective)
    visits, truth, which = [], [], []
    order = sorted(templates)  # the gallery's columns
    for p in people:
        for name, vectors in zip(_names(p, plan.judge), _of(p, plan.judge)):
            for v in _visits(vectors, plan.visit_frames):
                visits.append(v)
                truth.append(order.index(p.identity) if p.identity in order else -1)
                which.append(name)
    truth, which = np.asarray(truth), np.asarray(which)
    before = decide(point, _gallery(templates, False), visits, votes_k)
    after = decide(point_door, _gallery(templates, True), visits, votes_k)
    # Residents' visits by the plan's judging session (a stranger's own sessions are not the plan's).
    mine = truth >= 0
    by_session = {s: (rates_of(before[mine & (which == s)], truth[mine & (which == s)]),
                      rates_of(after[mine & (which == s)], truth[mine & (which == s)]))
                  for s in plan.judge if (mine & (which == s)).any()}
    return FoldResult(rates_of(before, truth), rates_of(after, truth), n, effective, point, point_door,
                      sum(len(t.door) for t in templates.values()), proposed, refused, by_session)


def folds_of(people: list[Person], folds: int, seed: int = 0) -> list[set[str]]:
    rng = np.random.default_rng(seed)
    order = [people[i].identity for i in rng.permutation(len(people))]
    return [set(order[i::folds]) for i in range(folds)]


def _sum(rates: list[Rates]) -> Rates:
    fa, nm = sum(r.false_accepts for r in rates), sum(r.non_mated for r in rates)
    misses, wrong, m = sum(r.misses for r in rates), sum(r.wrong_residents for r in rates), sum(r.mated for r in rates)
    return Rates(fa / nm if nm else float("nan"), misses / m if m else float("nan"), wrong / m if m else float("nan"),
                 nm, m, fa, misses, wrong)


def pooled(results: list[FoldResult]) -> dict:
    return {"without": _sum([r.without for r in results]), "with": _sum([r.with_door for r in results])}


def poisoning(people: list[Person], strangers: set[str], plan: Plan, policy_for, point_for, votes_k: int,
              candidate_threshold: float, sure_margin: float) -> dict:
    """Strangers show each resident's stolen code at every visit of their adaptation session (see the module)."""
    residents = [p for p in people if p.identity not in strangers]
    impostors = [p for p in people if p.identity in strangers]
    point = point_for(len(residents))
    policy = policy_for(point)
    planted, farthest, tried, let_in_before, let_in_after = 0, 0.0, 0, 0, 0
    judge = [v for imp in impostors for vectors in _of(imp, plan.judge) for v in _visits(vectors, plan.visit_frames)]
    before = decide(point, _gallery(_enrolled(residents, plan), True), judge, votes_k)  # the same for every victim
    for victim in residents:
        templates = _enrolled(residents, plan)
        column = sorted(templates).index(victim.identity)
        for _ in range(3):  # over and over: the same visits, again and again
            for imp in impostors:
                visits = [v for vectors in _of(imp, [plan.adapt]) for v in _visits(vectors, plan.visit_frames)]
                tried += len(visits)
                adapt(templates, {imp.identity: visits}, policy, point, candidate_threshold, sure_margin, votes_k,
                      claimed={imp.identity: victim.identity})
        door = templates[victim.identity].door
        planted += len(door)
        for d in door:
            farthest = max(farthest, float(np.linalg.norm(templates[victim.identity].enrolled - d.vector,
                                                          axis=1).min()))
        after = decide(point, _gallery(templates, True), judge, votes_k)
        let_in_before += int((before == column).sum())
        let_in_after += int((after == column).sum())
    return {"victims": len(residents), "impostors": len(impostors), "tries": tried, "planted": planted,
            "farthest_from_enrolled": round(farthest, 4), "anchor": policy.anchor,
            "impostor_visits_judged": len(judge) * len(residents), "let_in_as_victim_before": let_in_before,
            "let_in_as_victim_after": let_in_after}


def measure(people: list[Person], plan: Plan, *, match, calibration=None, anchor: float | None = None,
            max_door_templates: int = 3, novelty: float = 0.04, sure_margin: float = 0.06, seed: int = 0,
            with_poisoning: bool = True) -> dict:
    """Every fold of one set: FNIR and FPIR per visit without and with door templates, and the poisoning run."""
    from ..match.calibration import operating_point

    full = usable(people, plan)
    # Whoever lacks a session of the plan is a stranger in every fold (judged on all their sessions).
    others = [p for p in people if p not in full and any(len(p.vectors(n)) >= plan.visit_frames for n in p.sessions)]
    folds = min(plan.folds, len(full))
    if folds < 2:
        raise ValueError(f"{len(full)} people have every session of the plan: too few to hold some out")
    people = full + others

    def point_for(n: int) -> OperatingPoint:
        p = operating_point(match, n, calibration)
        return OperatingPoint(p.threshold, p.margin, p.visit_threshold, p.cohort_weight, p.cohort_anchor)

    def policy_for(point: OperatingPoint) -> AdaptPolicy:
        return AdaptPolicy(point.threshold if anchor is None else anchor, max_door_templates, novelty)

    per_resident = plan.enroll_frames
    results, poison = [], []
    for held in folds_of(full, folds, seed):
        strangers = held | {p.identity for p in others}
        results.append(run_fold(people, strangers, plan, policy_for, point_for, match.votes_k, match.threshold,
                                sure_margin, per_resident))
        if with_poisoning:
            poison.append(poisoning(people, strangers, plan, policy_for, point_for, match.votes_k, match.threshold,
                                    sure_margin))
    pooled_rates = pooled(results)
    out = {
        "people": len(full), "strangers_only": len(others),
        "plan": {"enroll": plan.enroll, "adapt": plan.adapt, "judge": list(plan.judge),
                 "enroll_frames": plan.enroll_frames, "visit_frames": plan.visit_frames, "folds": folds},
        "policy": {"anchor": "the point's threshold" if anchor is None else anchor,
                   "max_door_templates": max_door_templates, "novelty": novelty, "sure_margin": sure_margin},
        "without": pooled_rates["without"].as_json(), "with": pooled_rates["with"].as_json(),
        "by_session": {name: {"without": _sum([r.by_session[name][0] for r in results if name in r.by_session])
                              .as_json(),
                              "with": _sum([r.by_session[name][1] for r in results if name in r.by_session]).as_json()}
                       for name in plan.judge if any(name in r.by_session for r in results)},
        "folds": [{"residents": r.residents, "effective": r.effective, "threshold": r.point.threshold,
                   "threshold_with": r.point_door.threshold, "door_templates": r.door_templates,
                   "proposed": r.proposed, "refused": r.refused,
                   "without": r.without.as_json(), "with": r.with_door.as_json()} for r in results],
    }
    if poison:
        keys = ("victims", "impostors", "tries", "planted", "impostor_visits_judged", "let_in_as_victim_before",
                "let_in_as_victim_after")
        out["poisoning"] = {k: sum(p[k] for p in poison) for k in keys} | {
            "farthest_from_enrolled": max(p["farthest_from_enrolled"] for p in poison),
            "anchor_max": max(p["anchor"] for p in poison)}
    return out



def more_templates(samples, match, *, sizes=(100, 0), extra: int = 3, seeds=(0,), calibration=None) -> list[dict]:
    """Strangers against residents with more templates, on a labelled photo set (issue 23, part 4).

    The same residents (people with at least 3 + ``extra`` photos, probed from the photo after those) enrolled
    from 3 photos, as the calibration enrolled them, and from 3 + ``extra`` (more photos of them standing in for
    door templates): FPIR and FNIR per visit at the point for the gallery's size, and, with more templates, at the
    point for its effective size (:func:`kiosk.gallery.adapt.effective_residents`). The check is that the
    effective point keeps strangers where the enrolled gallery had them.
    """
    from ..match.calibration import operating_point
    from .openset import Protocol, Trials, run_trials
    from .rates import single_rates, visit_rates

    base = 3
    out = []
    for label, enroll, effective in (("enrolled", base, False), ("more templates, same point", base + extra, False),
                                     ("more templates, effective point", base + extra, True)):
        protocol = Protocol(enroll_photos=enroll, min_photos=base + extra, probe_from=base + extra,
                            visit_photos=2, sizes=tuple(sizes), mean_template=True)
        runs = [run_trials(samples, Protocol(**{**protocol.as_json(), "seed": s})) for s in seeds]
        for size in sizes:
            t = Trials.pooled([r[size] for r in runs])
            if not len(t.residents):
                continue
            n = int(np.median(t.residents))
            if any(r["templates"] == label and r["residents"] == n for r in out):
                continue  # a size the set cannot reach is everyone, as another size already was
            n_eff = effective_residents(n, n * enroll, base) if effective else n
            p = operating_point(match, n_eff, calibration)
            point = OperatingPoint(p.threshold, p.margin, p.visit_threshold, p.cohort_weight, p.cohort_anchor)
            v, s = visit_rates(point, t, match.votes_k), single_rates(point, t)
            out.append({"templates": label, "per_resident": enroll, "residents": n, "effective": n_eff,
                        "threshold": point.threshold, "visit_threshold": point.visit_threshold,
                        "visit": v.as_json(), "single": s.as_json()})
    return out
