"""The open-set report: rates per gallery size at the kiosk's operating point, as JSON and text."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..match.decide import OperatingPoint
from .openset import Protocol, Trials
from .rates import det_curve, single_rates, visit_rates


def size_label(size: int) -> str:
    return "all" if size == 0 else str(size)


def open_set_report(trials: dict[int, Trials], point_for: Callable[[int], OperatingPoint], votes_k: int,
                    protocol: Protocol, data: dict) -> tuple[dict, dict[int, dict]]:
    """The report (JSON-ready) and, per size, the rates at its operating point (for the DET plot)."""
    sizes, at = [], {}
    for size, t in sorted(trials.items(), key=lambda kv: (kv[0] == 0, kv[0])):
        n = int(np.median(t.residents)) if len(t.residents) else 0
        point = point_for(n)
        s, v = single_rates(point, t), visit_rates(point, t, votes_k)
        at[size] = {"single": s, "visit": v, "point": point, "residents": n}
        sizes.append({
            "size": size_label(size), "residents": n, "galleries": t.galleries,
            **({"note": f"only {n} residents enrolled per fold"} if size > n else {}),
            "point": _point_json(point),
            "single": s.as_json(), "visit": v.as_json(),
        })
    return {"data": data, "protocol": protocol.as_json(), "votes_k": votes_k, "sizes": sizes}, at


def curves(trials: dict[int, Trials], at: dict[int, dict], votes_k: int) -> dict[int, dict]:
    return {at[size]["residents"]: det_curve(at[size]["point"], t, votes_k) for size, t in trials.items()}


def _point_json(p: OperatingPoint) -> dict:
    out = {"threshold": round(p.threshold, 4), "margin": p.margin, "visit_threshold": round(p.visit_threshold, 4),
           "cohort_weight": p.cohort_weight, "source": p.source}
    if p.source == "calibration":
        out.update(fpir_target=p.fpir_target, calibrated_size=p.calibrated_size, expected_fpir=p.fpir,
                   expected_fnir=p.fnir, met=p.met)
    return out


def print_report(r: dict, out) -> None:
    d = r["data"]
    print(f"{d['directory']}: {d['images']} images of {d['identities']} people ({d['no_face']} without a face); "
          f"{d['used']} photos used", file=out)
    p = r["protocol"]
    print(f"residents enrolled from {p['enroll_photos']} photo(s){' + their mean template' if p['mean_template'] else ''};"
          f" visits of {p['visit_photos']} photos; {p['folds']} folds", file=out)
    print(f"{'size':>5} {'N':>6} {'galleries':>9}  {'kind':<7} {'FPIR':>8} {'(95% up)':>9} {'FNIR':>7} {'wrong':>8} "
          f"{'non-mated':>10} {'mated':>7}  operating point", file=out)
    for s in r["sizes"]:
        pt = s["point"]
        where = f"thr {pt['threshold']:.3f}/{pt['visit_threshold']:.3f} margin {pt['margin']:.2f}"
        if pt.get("cohort_weight"):
            where += f" cohort {pt['cohort_weight']:g}"
        if "note" in s:
            where += f" ({s['note']})"
        for kind in ("single", "visit"):
            x = s[kind]
            print(f"{s['size']:>5} {s['residents']:>6} {s['galleries']:>9}  {kind:<7} {_pc(x['fpir']):>8} {_pc(x['fpir_upper95']):>9} "
                  f"{_pc(x['fnir'], 1):>7} {_pc(x['wrong']):>8} {x['non_mated']:>10} {x['mated']:>7}  "
                  f"{where if kind == 'single' else ''}", file=out)
    if "plot" in r:
        print(f"DET plot: {r['plot']}", file=out)


def _pc(x: float, digits: int = 3) -> str:
    return "n/a" if x != x else f"{100 * x:.{digits}f}%"
