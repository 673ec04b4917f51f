"""The table people read, the JSON machines read, and the three targets."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .result import RunResult
from .search import SITE_SEARCH_TARGET_MS, SearchResult, SiteSearchResult
from .videos import PRESENT

CPU_TARGET = 8.0
SEARCH_TARGET = 5.0


@dataclass
class VideoRow:
    label: str
    size: str
    ours: RunResult
    baseline: RunResult

    @property
    def present(self) -> set[str]:
        return PRESENT.get(self.label, set())

    @property
    def missed(self) -> set[str]:
        """People the loop recognised correctly and we did not."""
        return (set(self.baseline.identities) & self.present) - set(self.ours.identities)

    def false_accepts(self, run: RunResult) -> set[str]:
        return set(run.identities) - self.present


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else ("-" if not a else "inf")


def _ids(c) -> str:
    return ", ".join(f"{k}({v})" for k, v in sorted(c.items())) or "-"


def totals(rows: list[VideoRow]) -> dict:
    frames = sum(r.ours.frames for r in rows)
    ours_cpu = sum(r.ours.cpu_s for r in rows)
    base_cpu = sum(r.baseline.cpu_s for r in rows)
    return {
        "frames": frames,
        "ours_cpu_s": ours_cpu,
        "baseline_cpu_s": base_cpu,
        "ours_ms_per_frame": 1000 * ours_cpu / frames if frames else 0.0,
        "baseline_ms_per_frame": 1000 * base_cpu / frames if frames else 0.0,
        "cpu_ratio": base_cpu / ours_cpu if ours_cpu else float("inf"),
        "ours_descriptors": sum(r.ours.descriptors for r in rows),
        "baseline_descriptors": sum(r.baseline.descriptors for r in rows),
        "ours_faces": sum(r.ours.faces for r in rows),
        "baseline_faces": sum(r.baseline.faces for r in rows),
    }


def verdicts(rows: list[VideoRow], search: SearchResult | None,
             site: SiteSearchResult | None = None) -> list[tuple[str, bool, str]]:
    t = totals(rows)
    out = [(
        f"CPU per frame >= {CPU_TARGET:g}x less than the per-frame loop",
        t["cpu_ratio"] >= CPU_TARGET,
        f"{t['cpu_ratio']:.1f}x ({t['ours_ms_per_frame']:.1f} vs {t['baseline_ms_per_frame']:.1f} ms/frame)",
    )]
    missed = {r.label: sorted(r.missed) for r in rows if r.missed}
    out.append((
        "every identity the loop recognises (correctly) is recognised too",
        not missed,
        "all recognised" if not missed else "; ".join(f"{v}: {', '.join(ids)}" for v, ids in missed.items()),
    ))
    ours_fa = {r.label: sorted(r.false_accepts(r.ours)) for r in rows if r.false_accepts(r.ours)}
    base_fa = {r.label: sorted(r.false_accepts(r.baseline)) for r in rows if r.false_accepts(r.baseline)}
    out.append((
        "no identity accepted in a video they are not in (ours)",
        not ours_fa,
        "none" + (f"; the loop falsely matched {base_fa}" if base_fa else "")
        if not ours_fa else f"ours: {ours_fa}; the loop: {base_fa}",
    ))
    if search is not None:
        out.append((
            f"search at {search.templates:,} templates >= {SEARCH_TARGET:g}x faster than face_distance",
            search.ratio >= SEARCH_TARGET,
            f"{search.ratio:.1f}x ({search.ours_ms:.2f} vs {search.baseline_ms:.2f} ms/query)",
        ))
    if site is not None:
        out.append((
            f"search at {site.residents:,} residents x {site.templates // site.residents} templates (and their means) "
            f"<= {SITE_SEARCH_TARGET_MS:g} ms",
            site.median_ms <= SITE_SEARCH_TARGET_MS,
            f"{site.median_ms:.2f} ms/query (p90 {site.p90_ms:.2f})",
        ))
    return out


def table(rows: list[VideoRow], search: SearchResult | None, site: SiteSearchResult | None = None) -> str:
    head = ["video", "size", "frames", "ours ms/f", "loop ms/f", "CPU ratio", "desc ours/loop", "faces ours/loop",
            "ours decisions", "ours recognised (decisions)", "loop recognised (frames)"]
    body = []
    for r in rows:
        o, b = r.ours, r.baseline
        body.append([
            r.label, r.size, str(o.frames), f"{o.cpu_ms_per_frame:.1f}", f"{b.cpu_ms_per_frame:.1f}",
            _ratio(b.cpu_s, o.cpu_s), f"{o.descriptors}/{b.descriptors}", f"{o.faces}/{b.faces}",
            _ids(o.outcomes), _ids(o.identities), _ids(b.identities),
        ])
    t = totals(rows)
    body.append([
        "TOTAL", "", str(t["frames"]), f"{t['ours_ms_per_frame']:.1f}", f"{t['baseline_ms_per_frame']:.1f}",
        f"{t['cpu_ratio']:.1f}x", f"{t['ours_descriptors']}/{t['baseline_descriptors']}",
        f"{t['ours_faces']}/{t['baseline_faces']}", _ids(sum((r.ours.outcomes for r in rows), Counter())), "", "",
    ])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in body]
    lines = ["\n".join(out), ""]
    for r in rows:
        for rid in sorted(r.missed):
            w = r.baseline.face_widths.get(rid, [])
            d = sorted(r.baseline.distances.get(rid, []))
            if w:
                lines.append(
                    f"Missed by ours in {r.label}: {rid} (loop matched it on {len(w)} frames, face width "
                    f"{min(w)}-{max(w)} px, median {sorted(w)[len(w) // 2]} px; distance {d[0]:.3f}-{d[-1]:.3f}, "
                    f"median {d[len(d) // 2]:.3f})"
                )
    if search is not None:
        lines.append(
            f"Gallery search, {search.templates:,} templates / {search.residents:,} residents: "
            f"Gallery.search {search.ours_ms:.2f} ms, face_recognition.face_distance {search.baseline_ms:.2f} ms "
            f"per query (CPU, median of {search.queries}) = {search.ratio:.1f}x; same nearest on {search.agree}/{search.queries}"
        )
    if site is not None:
        lines.append(
            f"Site search, {site.residents:,} residents x {site.templates // site.residents} templates and each "
            f"resident's mean, ranked with the cohort (Gallery.search as the kiosk calls it): {site.median_ms:.2f} ms "
            f"per query (CPU, median of {site.queries}; p90 {site.p90_ms:.2f} ms); gallery built in {site.build_s:.2f} s"
        )
    lines.append("")
    for name, ok, detail in verdicts(rows, search, site):
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return "\n".join(lines)


def as_json(rows: list[VideoRow], search: SearchResult | None, enrolled: dict,
            site: SiteSearchResult | None = None) -> dict:
    t = totals(rows)
    return {
        "videos": {r.label: {"size": r.size, "ours": r.ours.as_json(), "baseline": r.baseline.as_json(),
                             "missed": sorted(r.missed)} for r in rows},
        "totals": {k: round(v, 3) if isinstance(v, float) else v for k, v in t.items()},
        "search": search.as_json() if search else None,
        "site_search": site.as_json() if site else None,
        "enrolled": enrolled,
        "targets": [{"target": n, "met": ok, "measured": d} for n, ok, d in verdicts(rows, search, site)],
    }
