"""Reports on the stored events: what an office asks of a few hundred doors' check-ins.

Each report is a :class:`Table` (a title, column names, rows) built from the
store, so that ``kiosk-admin report`` prints it as text or CSV and draws it
as a PNG chart the same way. Days and hours are local to ``tz`` (a
:class:`zoneinfo.ZoneInfo`, default the machine's). Nothing here writes
except :func:`erase_resident`.
"""

from __future__ import annotations

import csv
import functools
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from ..csvsafe import text_cell
from ..sync.events.format import CHECKIN_TYPES
from .store import Store

#: Event types that are a door refusing someone (not a check-in, not a notice).
REFUSED_TYPES = ("unknown", "spoof", "refused_location", "qr_refused", "look_at_camera", "too_poor", "duplicate")


@dataclass
class Table:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # lines printed under the table (warnings)

    def text(self) -> str:
        """Aligned columns for a terminal."""
        cells = [self.columns] + [tuple("" if v is None else _fmt(v) for v in r) for r in self.rows]
        widths = [max(len(str(r[i])) for r in cells) for i in range(len(self.columns))]
        lines = [self.title, ""]
        for n, r in enumerate(cells):
            lines.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        if not self.rows:
            lines.append("(nothing in this period)")
        if self.notes:
            lines += [""] + self.notes
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """CSV for a spreadsheet: numbers as numbers, text that could run as a formula quoted (kiosk.csvsafe)."""
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(self.columns)
        text = text_cell
        # Text (most cells: days, residents, times, doors) straight to text_cell; the rest by _csv_cell.
        w.writerows([text(v) if type(v) is str else _csv_cell(v) for v in r] for r in self.rows)
        return out.getvalue()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _fmt(v)  # a number we write: never a formula, its minus sign stays
    return text_cell(_fmt(v))


def _local(ts: float, tz: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(ts, tz).astimezone(tz) if tz else datetime.fromtimestamp(ts).astimezone()


def _span(since: float | None, until: float | None) -> str:
    def day(t):
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t is not None else "…"

    return f"{day(since)} to {day(until)}"


class LocalClock:
    """Unix times to local (day, seconds into the day), the UTC offset looked up once per quarter hour.

    Every offset change of the zones in use falls on a quarter hour, so the
    offset at the start of a quarter hour holds for all of it; a report over a
    million events then asks the time zone database a few thousand times, not
    a million. :meth:`spans` cuts a period where the offset changes, so that
    the store can count per local day in SQL.
    """

    def __init__(self, tz: tzinfo | None):
        self.tz = tz
        self._offsets: dict[int, float] = {}

    def offset(self, q: int) -> float:
        """The UTC offset (seconds) throughout quarter hour ``q`` (Unix time // 900)."""
        off = self._offsets.get(q)
        if off is None:
            off = self._offsets[q] = _local(q * 900.0, self.tz).utcoffset().total_seconds()
        return off

    def __call__(self, ts: float) -> tuple[str, int]:
        local = ts + self.offset(int(ts // 900))
        days = int(local // 86400)
        return _DAY0.fromordinal(_ORDINAL0 + days).isoformat(), int(local - days * 86400)

    def spans(self, since: float, until: float) -> list[tuple[float, float, float]]:
        """[since, until) cut where the offset changes: (start, end, offset) each.

        A day (then an hour) whose first and last quarter hour have one offset
        is taken whole: no zone changes its offset twice within a day.
        """
        out: list[list[float]] = []
        q, q_end = int(since // 900), int(-(-until // 900))
        while q < q_end:
            off = self.offset(q)
            step = 1
            for block in (96, 4):
                end = min(q - q % block + block, q_end)
                if end - q > 1 and self.offset(end - 1) == off:
                    step = end - q
                    break
            if out and out[-1][2] == off:
                out[-1][1] = (q + step) * 900.0
            else:
                out.append([q * 900.0, (q + step) * 900.0, off])
            q += step
        if out:
            out[0][0], out[-1][1] = since, until
        return [(a, b, c) for a, b, c in out]


_DAY0 = datetime(1970, 1, 1).date()
_ORDINAL0 = _DAY0.toordinal()


@functools.lru_cache(maxsize=86400)
def _hms(seconds: int) -> str:
    """HH:MM:SS of a second of the day (kept: a report over many residents writes the same ones again)."""
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def daily(store: Store, *, since: float | None = None, until: float | None = None,
          tz: tzinfo | None = None, site: str | None = None) -> Table:
    """Per resident and local day: first and last check-in, how many, at which doors."""
    return daily_page(store, since=since, until=until, tz=tz, site=site)[0]


def daily_page(store: Store, *, since: float | None = None, until: float | None = None,
               tz: tzinfo | None = None, site: str | None = None, limit: int | None = None,
               offset: int = 0) -> tuple[Table, int]:
    """:func:`daily`'s rows ``offset`` to ``offset + limit`` (all without a limit), and how many rows in all.

    Counted, ordered and cut by the store in SQL (per local day and resident, the
    UTC offset chosen per span of one offset, so a day that a clock change cuts in
    two is one row); only the rows asked for are written here.
    """
    title = f"Check-ins per resident and day ({_span(since, until)})"
    columns = ("day", "resident", "first", "last", "check_ins", "doors")
    if since is None or until is None:
        span = store.event_span(CHECKIN_TYPES)
        if span is None:
            return Table(title, columns, []), 0
        since = span[0] if since is None else since
        until = span[1] + 1.0 if until is None else until
    spans = LocalClock(tz).spans(since, until) if until > since else []
    found, total = store.attendance(spans, CHECKIN_TYPES, site=site, limit=limit, offset=offset)
    days: dict[int, str] = {}
    rows = []
    for day, resident, first, last, n, doors in found:
        day = int(day)
        name = days.get(day)
        if name is None:
            name = days[day] = _DAY0.fromordinal(_ORDINAL0 + day).isoformat()
        rows.append((name, resident, _hms(int(first - day * 86400)), _hms(int(last - day * 86400)), int(n), doors))
    return Table(title, columns, rows), total


def doors(store: Store, *, since: float | None = None, until: float | None = None,
          site: str | None = None) -> Table:
    """Per door: check-ins, each kind of refusal, spoofs, and when it was last heard from."""
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    last: dict[tuple[str, str], float] = {}
    for e in store.events(since=since, until=until, site=site):
        door = (e["site"], e["device"])
        kind = "check_ins" if e["type"] in CHECKIN_TYPES else e["type"]
        counts[door][kind] += 1
        if e["flags"]:
            counts[door]["flagged"] += 1
        last[door] = max(last.get(door, 0.0), e["event_time"])
    kinds = ("check_ins", "unknown", "spoof", "refused_location", "qr_refused", "look_at_camera", "too_poor",
             "duplicate", "flagged")
    rows = []
    for door in sorted(counts):
        c = counts[door]
        rows.append((f"{door[0]}/{door[1]}", *(c[k] for k in kinds),
                     sum(v for k, v in c.items() if k not in kinds), _local(last[door], None).strftime("%Y-%m-%d %H:%M")))
    return Table(f"Events per door ({_span(since, until)})", ("door", *kinds, "other", "last_event"), rows)


def hours(store: Store, *, since: float | None = None, until: float | None = None, tz: tzinfo | None = None,
          site: str | None = None, device: str | None = None) -> Table:
    """Check-ins per local hour of the day (0-23), over the period."""
    c: Counter = Counter()
    refused: Counter = Counter()
    for e in store.events(since=since, until=until, site=site, device=device):
        h = _local(e["event_time"], tz).hour
        if e["type"] in CHECKIN_TYPES:
            c[h] += 1
        elif e["type"] in REFUSED_TYPES:
            refused[h] += 1
    rows = [(f"{h:02d}:00", c[h], refused[h]) for h in range(24)]
    return Table(f"Check-ins per hour of the day ({_span(since, until)})", ("hour", "check_ins", "refused"), rows)


def refusals(store: Store, *, since: float | None = None, until: float | None = None,
             site: str | None = None) -> Table:
    """Refusals at the doors (spoofs, unknown faces …, per door) and messages the back end refused (per reason)."""
    rows: list[tuple] = []
    at_doors: Counter = Counter()
    for e in store.events(since=since, until=until, site=site, types=REFUSED_TYPES):
        at_doors[(f"{e['site']}/{e['device']}", e["type"])] += 1
    for (door, kind), n in sorted(at_doors.items()):
        rows.append(("door", door, kind, n))
    by_reason: Counter = Counter()
    for r in store.refusals(since=since, until=until):
        by_reason[(r["topic"], r["reason"])] += 1
    for (topic, reason), n in sorted(by_reason.items()):
        rows.append(("back end", topic, reason, n))
    return Table(f"Refusals and spoofs ({_span(since, until)})", ("refused_by", "where", "why", "count"), rows)


def history(store: Store, resident_id: str, *, since: float | None = None, until: float | None = None,
            tz: tzinfo | None = None) -> Table:
    """Everything stored about one resident: what a resident asks to see."""
    rows = []
    for e in store.events(since=since, until=until, resident_id=resident_id, claims=True):  # one query
        claims = e["claims"] or {}
        rows.append((_local(e["event_time"], tz).strftime("%Y-%m-%d %H:%M:%S"), f"{e['site']}/{e['device']}",
                     e["type"], e["outcome"], e["method"], claims.get("distance"), claims.get("liveness"),
                     e["flags"], e["event_id"]))
    return Table(f"Stored events of resident {resident_id}",
                 ("time", "door", "type", "outcome", "method", "distance", "liveness", "flags", "event_id"), rows)


def chart(table: Table, path: Path) -> Path:
    """A PNG bar chart of a report: counts by the report's first column(s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    cols = table.columns
    if cols[0] == "day":  # daily: check-ins per day, one bar per day
        per_day: Counter = Counter()
        residents: dict[str, set] = defaultdict(set)
        for r in table.rows:
            per_day[r[0]] += r[4]
            residents[r[0]].add(r[1])
        days = sorted(per_day)
        ax.bar(days, [per_day[d] for d in days], label="check-ins")
        ax.plot(days, [len(residents[d]) for d in days], "o-", color="tab:orange", label="residents")
        ax.legend()
        ax.set_ylabel("per day")
    elif cols[0] == "hour":
        x = [r[0][:2] for r in table.rows]
        ax.bar(x, [r[1] for r in table.rows], label="check-ins")
        ax.bar(x, [r[2] for r in table.rows], bottom=[r[1] for r in table.rows], label="refused")
        ax.set_xlabel("hour of the day")
        ax.legend()
    elif cols[0] == "door":
        names = [r[0] for r in table.rows]
        bottom = [0] * len(names)
        for i, kind in enumerate(cols[1:-2], start=1):
            vals = [r[i] for r in table.rows]
            if any(vals):
                ax.bar(names, vals, bottom=bottom, label=kind)
                bottom = [b + v for b, v in zip(bottom, vals)]
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=45)
    elif cols[0] == "refused_by":
        labels = [f"{r[1]}\n{r[2]}" for r in table.rows]
        ax.barh(labels, [r[3] for r in table.rows], color=["tab:red" if r[0] == "door" else "tab:gray"
                                                           for r in table.rows])
    else:  # a history: events per type
        c = Counter(r[2] for r in table.rows)
        ax.bar(list(c), list(c.values()))
    ax.set_title(table.title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return Path(path)


def erase_resident(store: Store, resident_id: str) -> int:
    """Delete one resident's stored events; returns how many."""
    return store.erase_resident(resident_id)


def parse_when(text: str | None, tz: tzinfo | None) -> float | None:
    """A report bound: ``YYYY-MM-DD`` (local midnight), an ISO 8601 time, or Unix seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r}: not a date (YYYY-MM-DD), an ISO 8601 time or Unix seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz) if tz else dt.astimezone()
    return dt.timestamp()

