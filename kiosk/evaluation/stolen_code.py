"""What a stolen QR credential buys a stranger where the credential is the second factor.

With ``match.second_factor`` on, a face the candidate rule names (``match.threshold`` and
``visit_threshold``, no margin) ends as SHOW_QR, and a credential for any of its candidates opens the
door: each descriptor's and the visit mean's nearest and runner-up resident within ``match.threshold``
(:meth:`~kiosk.match.decide.VoteBox.candidates`). A stranger who holds resident R's code, and stands
in view himself, gets in when R is among his own face's candidates: R's lookalike, or a face R is only
the runner-up of.

Measured on strangers' visits dealt as :mod:`kiosk.evaluation.openset` deals them (each fold's people
are strangers; everyone else enrollable is enrolled, one gallery per fold):

- ``narrowed``: stranger visits that end as SHOW_QR at all (the right stolen code would let them in);
- ``per_code``: over residents R and stranger visits, how often R is a candidate: the chance that a
  stranger holding one resident's stolen code is let in;
- ``runner_up``: the same, counting only visits where R is a candidate but not the nearest one;
- ``worst_resident``: the largest share of stranger visits one resident is a candidate of.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..config import MatchSettings
from ..gallery.store import Gallery, Resident, rank
from .openset import Protocol, _distances, _groups, fold_of, people_of
from .pairs import Sample
from .rates import wilson_upper


@dataclass(frozen=True)
class StolenCode:
    visits: int  # stranger visits
    residents: int  # gallery size, the mean over folds
    narrowed: int  # of those visits, ended as SHOW_QR
    pairs: int  # (resident, stranger visit) pairs
    accepted: int  # pairs where the resident is a candidate of the visit
    runner_up: int  # of those, where the resident is not the visit's nearest candidate
    worst_resident: float

    @classmethod
    def pooled(cls, parts: list["StolenCode"]) -> "StolenCode":
        """Several runs (seeds) as one."""
        total = {k: sum(getattr(x, k) for x in parts) for k in ("visits", "narrowed", "pairs", "accepted", "runner_up")}
        return cls(residents=round(float(np.mean([x.residents for x in parts]))),
                   worst_resident=max(x.worst_resident for x in parts), **total)

    @property
    def per_code(self) -> float:
        return self.accepted / self.pairs if self.pairs else float("nan")

    def as_json(self) -> dict:
        d = asdict(self)
        d.update(narrowed_share=self.narrowed / self.visits if self.visits else float("nan"),
                 per_code=self.per_code, per_code_upper95=wilson_upper(self.accepted, self.pairs),
                 runner_up_per_code=self.runner_up / self.pairs if self.pairs else float("nan"))
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


def stolen_code(samples: list[Sample], protocol: Protocol, match: MatchSettings) -> StolenCode:
    """The candidate rule of ``match`` on every fold's strangers' visits (see the module's docstring)."""
    p = protocol
    people = people_of(samples, p.max_photos)
    names = list(people)
    enrollable = {u for u in names if p.mixed or len(people[u]) >= max(p.enroll_photos, p.min_photos)}
    visits = narrowed = pairs = accepted = runner_up = 0
    worst, sizes = 0.0, []
    for fold in range(p.folds):
        enrolled = [u for u in names if fold_of(u, p.folds, p.seed) != fold and u in enrollable]
        strangers = [u for u in names if u not in set(enrolled)]
        if not enrolled:
            continue
        gallery = Gallery({u: Resident(u, u) for u in enrolled}, [u for u in enrolled for _ in people[u][: p.enroll_photos]],
                          np.vstack([people[u][: p.enroll_photos] for u in enrolled]))
        groups = [people[u][g] for u in strangers for g in _groups(len(people[u]), p.visit_photos, p.max_visits)]
        if not groups:
            continue
        photos = np.stack(groups)  # visits × V × dimensions
        n, v = photos.shape[:2]
        singles = rank(_distances(gallery, photos.reshape(n * v, -1), p.mean_template))
        mean = rank(_distances(gallery, photos.mean(axis=1), p.mean_template))
        hit = np.zeros((n, len(gallery.ids)), bool)  # resident is a candidate of the visit
        for best, d, runner, margin in ((singles.best.reshape(n, v), singles.distance.reshape(n, v),
                                         singles.runner_up.reshape(n, v), singles.margin.reshape(n, v)),
                                        (mean.best[:, None], mean.distance[:, None], mean.runner_up[:, None],
                                         mean.margin[:, None])):
            for who, dist in ((best, d), (runner, d + margin)):
                ok = (who >= 0) & (dist <= match.threshold)
                rows, cols = np.nonzero(ok)
                hit[rows, who[rows, cols]] = True
        named = _narrowed(singles.best.reshape(n, v), singles.distance.reshape(n, v), mean.best, mean.distance,
                          match)
        hit &= named[:, None]
        # The visit's nearest candidate (as VoteBox orders them: by the smallest distance any row gave).
        d_best = np.where(singles.distance.reshape(n, v).min(axis=1) <= mean.distance,
                          singles.best.reshape(n, v)[np.arange(n), singles.distance.reshape(n, v).argmin(axis=1)],
                          mean.best)
        nearest = np.where(named, d_best, -1)
        visits += n
        narrowed += int(named.sum())
        pairs += n * len(gallery.ids)
        accepted += int(hit.sum())
        runner_up += int(hit.sum() - hit[np.arange(n), np.maximum(nearest, 0)][named].sum())
        worst = max(worst, float(hit.mean(axis=0).max()))
        sizes.append(len(gallery.ids))
    return StolenCode(visits, round(float(np.mean(sizes))) if sizes else 0, narrowed, pairs, accepted, runner_up, worst)


def _narrowed(best, distance, mean_best, mean_distance, match: MatchSettings) -> np.ndarray:
    """Visits the candidate rule names (SHOW_QR): K of V votes for one resident within ``threshold``
    (K = min(votes_k, V), as :func:`kiosk.evaluation.rates.visit_decisions`), or the mean within
    ``visit_threshold`` with most votes agreeing; no margin."""
    v = best.shape[1]
    good = (best >= 0) & (distance <= match.threshold)
    same = (best[:, :, None] == best[:, None, :]) & good[:, None, :]
    k_of_m = np.where(good, same.sum(axis=2), 0).max(axis=1) >= min(match.votes_k, v)
    limit = min(match.visit_threshold, match.threshold) if match.visit_threshold > 0 else -1.0
    agree = 2 * (best == mean_best[:, None]).sum(axis=1) > v
    return k_of_m | ((mean_best >= 0) & (mean_distance <= limit) & agree)
