"""PNG charts drawn on the server (matplotlib, Agg): refusals or spoofs by door and hour of the day."""

from __future__ import annotations

import io
from collections import Counter
from datetime import datetime, tzinfo

from ..backend.store import Store


def by_door_and_hour(store: Store, types: tuple[str, ...], *, since: float, until: float,
                     tz: tzinfo | None) -> dict[str, list[int]]:
    """Per door (SITE/DEVICE): 24 counts of events of ``types`` by local hour."""
    counts: Counter = Counter()
    for e in store.events(since=since, until=until, types=types):
        hour = datetime.fromtimestamp(e["event_time"], tz).hour if tz else datetime.fromtimestamp(e["event_time"]).hour
        counts[(f"{e['site']}/{e['device']}", hour)] += 1
    doors = sorted({d for d, _ in counts})
    return {d: [counts[(d, h)] for h in range(24)] for d in doors}


def bars_png(title: str, series: dict[str, list[int]]) -> bytes:
    """Stacked bars, one colour per door, over the 24 hours of the day."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state shared between threads

    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax = fig.subplots()
    hours = list(range(24))
    bottom = [0] * 24
    for door, counts in series.items():
        ax.bar(hours, counts, bottom=bottom, label=door)
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_xticks(hours, [f"{h:02d}" for h in hours], fontsize=8)
    ax.set_xlabel("hour of the day")
    ax.set_ylabel("events")
    ax.set_title(title if series else f"{title}: none in this period")
    if series:
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
