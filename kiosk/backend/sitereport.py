"""The site report: how close each site's strangers come to the threshold, the site's FPIR and FNIR.

Over a rolling window, per site and per door, from the stored events' site
claims (:mod:`kiosk.match.site`):

- strangers: UNKNOWN face visits that no check-in names as its retry
  (``retry_of``); their gaps against the calibration's near-miss profile give
  the crowding, and their own tail the site's FPIR with 95% bounds
  (:mod:`kiosk.siteestimate`);
- residents turned away: UNKNOWN visits a check-in names as its retry, and
  check-ins a QR credential confirmed whose face alone did not name the
  resident; over every resident's face visit, the on-site FNIR (a lower
  bound: a resident who walks off without trying again is not counted).

A site whose strangers crowd the threshold beyond chance is warned about (log,
a line under the table) with the stricter target that would keep the site's
FPIR within its target (``kiosk-admin gallery match`` publishes it).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from .. import siteestimate as se
from ..sync.events.format import CHECKIN_TYPES
from .report import Table, _span
from .store import Store

log = logging.getLogger(__name__)

#: The site report's rolling window, in days, unless told otherwise.
DEFAULT_DAYS = 30.0


def _num(x: float | None) -> str | None:
    return None if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str | None:
    return None if x is None else f"{100 * x:.3g}%"


def site_report(store: Store, *, since: float, until: float | None = None, site: str | None = None,
                delta: float = se.DEFAULT_DELTA, points: list[dict] | None = None) -> tuple[Table, list[dict]]:
    """The table, and per scope (site, then each door) what was estimated (``crowded``, ``suggest`` …)."""
    points = se.load_points() if points is None else points
    events = list(store.events(since=since, until=until, site=site, types=("unknown", *CHECKIN_TYPES), claims=True))
    by_scope: dict[tuple[str, str | None], list[dict]] = defaultdict(list)
    for e in events:
        by_scope[(e["site"], None)].append(e)
        by_scope[(e["site"], e["device"])].append(e)
    rows, found = [], []
    for (name, door), scope_events in sorted(by_scope.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        s = se.split(scope_events)
        est = se.estimate(s.strangers, points, delta=delta)
        hint = se.suggest(points, est, s.gallery_size or 0) if door is None else None
        fnir = s.fnir
        fnir_hi = se.clopper_pearson(s.turned_away, s.resident_visits)[1] if s.resident_visits else None
        status = "CROWDED" if est.crowded else ("ok" if est.enough else "too few")
        scope = name if door is None else f"{name}/{door}"
        rows.append((scope, est.strangers, est.near, f"{est.expected:.1f}", _num(est.ratio), _num(est.ratio_high),
                     _pct(est.fpir_calibrated), _pct(est.fpir), _pct(est.fpir_low), _pct(est.fpir_high),
                     est.tail_near, est.tail_min_visits, est.min_visits, status,
                     s.resident_visits, s.turned_away, _pct(fnir), _pct(fnir_hi),
                     None if hint is None else f"{hint['fpir_target']:g}"))
        found.append({"scope": scope, "site": name, "device": door, "estimate": est, "suggest": hint,
                      "fnir": fnir, "fnir_upper95": fnir_hi})
    table = Table(f"Strangers near the threshold, per site and door (gap <= {delta:g}; {_span(since, until)})",
                  ("scope", "strangers", "near", "expected", "ratio", "ratio_upper95", "fpir_calibrated",
                   "fpir_site", "fpir_lower95", "fpir_upper95", "tail_gaps", "tail_min_strangers", "min_strangers",
                   "status", "resident_visits", "turned_away",
                   "fnir_site", "fnir_upper95", "suggest_target"), rows)
    for f in found:
        if f["estimate"].crowded:
            log.warning("site estimate: %s: strangers crowd the threshold (%.2fx the calibration's crowding, at least "
                        "%.2fx; site FPIR at least %s)", f["scope"], f["estimate"].ratio, f["estimate"].ratio_low,
                        _pct(f["estimate"].fpir_low) or "n/a: too few gaps to fit")
            line = f"WARNING {f['scope']}: {f['estimate'].line()}"
            if f["suggest"] and not f["suggest"]["enough"]:
                line += (f"; even the strictest calibrated target {f['suggest']['fpir_target']:g} may not keep the "
                         "site's upper bound within the target: confirm faces with the QR credential "
                         "(match.second_factor = \"always\"; docs/recognition.md), or publish it: "
                         f"kiosk-admin gallery match --site {f['site']} --fpir-target {f['suggest']['fpir_target']:g}")
            elif f["suggest"]:
                line += (f"; a stricter target {f['suggest']['fpir_target']:g} (threshold "
                         f"{f['suggest']['threshold']:.4f}, calibrated FNIR {100 * f['suggest']['fnir']:.3g}%) keeps the "
                         "site's upper bound within the target (docs/recognition.md): "
                         f"kiosk-admin gallery match --site {f['site']} --fpir-target {f['suggest']['fpir_target']:g}")
            table.notes.append(line)
    return table, found
