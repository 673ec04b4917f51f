"""PNG charts drawn on the server (matplotlib, Agg): refusals or spoofs by door and hour of the day, as heat maps."""

from __future__ import annotations

import io
import threading
from collections import Counter, OrderedDict
from datetime import tzinfo

from ..backend.report import LocalClock
from ..backend.store import Store


def by_door_and_hour(store: Store, types: tuple[str, ...], *, since: float, until: float,
                     tz: tzinfo | None) -> dict[str, list[int]]:
    """Per door (SITE/DEVICE): 24 counts of events of ``types`` by local hour."""
    counts: Counter = Counter()
    clock = LocalClock(tz)
    for ts, site, device in store.event_rows(("event_time", "site", "device"), since=since, until=until,
                                             types=types):
        counts[(f"{site}/{device}", clock(ts)[1] // 3600)] += 1
    doors = sorted({d for d, _ in counts})
    return {d: [counts[(d, h)] for h in range(24)] for d in doors}


def heatmap_png(title: str, series: dict[str, list[int]]) -> bytes:
    """Doors down, the 24 hours of the day across, darker where more happened (one image: quick to draw).

    The same title and counts give the same picture, so a picture is drawn once
    and kept (a few dozen, the newest): a page reloaded on unchanged data does
    not draw it again.
    """
    key = (title, tuple((d, tuple(c)) for d, c in series.items()))
    with _lock:
        png = _drawn.get(key)
        if png is not None:
            _drawn.move_to_end(key)
            return png
    png = _draw(title, series)
    with _lock:
        _drawn[key] = png
        while len(_drawn) > _KEEP:
            _drawn.popitem(last=False)
    return png


_KEEP = 64
_drawn: OrderedDict = OrderedDict()
_lock = threading.Lock()


def warm_up() -> None:
    """Load matplotlib and its fonts by drawing a chart nobody sees (about a second): ``serve`` does it on a
    thread at start, so that the first chart a person asks for is drawn as fast as the others."""
    _draw("", {})


def _draw(title: str, series: dict[str, list[int]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state shared between threads

    doors = list(series) or ["(none)"]
    counts = [series[d] for d in series] or [[0] * 24]
    height = 1.3 + 0.25 * len(doors)
    fig = Figure(figsize=(9, height), dpi=100)
    ax = fig.add_axes((0.2, 0.45 / height, 0.77, 1 - 0.85 / height))  # fixed margins: no tight_layout pass
    ax.imshow(counts, aspect="auto", cmap="Reds", interpolation="nearest", vmin=0)
    ax.set_xticks(range(24), [f"{h:02d}" for h in range(24)], fontsize=8)
    ax.set_yticks(range(len(doors)), doors, fontsize=8)
    peak = max(map(max, counts))
    total = sum(map(sum, counts))
    ax.set_title(f"{title}: {total} in all, at most {peak} in one hour at one door (darkest)" if series
                 else f"{title}: none in this period", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
