"""Each door's last word, as the console's publisher filed it (``console_doors``): what the doors' pages show.

Online or offline comes from the door's retained status (and its age); the
gallery version a door holds comes from its newest *verified* ack only
(:class:`~kiosk.sync.updates.admin.Ledger`); outbox depth, software version,
the recognition target at the gallery's size and the location state come
from the status the door publishes (unsigned: shown, never acted on).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from ..backend.store import Store


@dataclass(frozen=True)
class Door:
    site: str
    device: str
    state: str  # online, offline, unknown
    last_seen: float | None
    outbox_depth: int | None
    software: str | None
    gallery_version: int | None  # from the signed ack
    ack_result: str | None
    target_met: bool | None
    residents: int | None
    location: str | None
    heard_at: float
    status_gallery_version: int | None = None  # the gallery the status was sent with

    @property
    def status_behind(self) -> bool:
        """The status predates the gallery the door acknowledged: its size and target are the old gallery's
        (a door sends its status every mqtt.status_interval, not after each update)."""
        return self.gallery_version is not None and (self.status_gallery_version or 0) < self.gallery_version

    def behind(self, version: int | None) -> bool:
        return bool(version) and (self.gallery_version is None or self.gallery_version < version)


#: The fields of a door's status the pages show: all that is filed of it.
SHOWN = (("state",), ("time",), ("outbox", "depth"), ("versions", "software"), ("recognition", "target_met"),
         ("recognition", "residents"), ("location", "state"), ("gallery", "version"))


def shown(status: dict[str, Any]) -> dict[str, Any]:
    """What the pages show of a status, each a plain value (a door may nest a thousand lists anywhere else)."""
    out: dict[str, Any] = {}
    for path in SHOWN:
        v = _get(status, *path)
        if isinstance(v, bool) or _number(v) is not None or (isinstance(v, str) and len(v) <= 200):
            node = out
            for p in path[:-1]:
                node = node.setdefault(p, {})
            node[path[-1]] = v
    return out


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def _door(row, now: float, offline_after_s: float) -> Door:
    site, device, status_text, ack_text, heard_at = row
    status, ack = _json(status_text), _json(ack_text)
    # The status is unsigned and any door can send one: each field is taken only if it is what it should be.
    seen = _number(status.get("time"))
    seen = seen if seen is not None and 0 <= seen < TIME_LIMIT else None
    state = status.get("state") if status.get("state") in ("online", "offline") else "unknown"
    if state == "online" and seen is not None and now - seen > offline_after_s:
        state = "offline"  # its last status is too old: the broker has not said so yet
    target_met = _get(status, "recognition", "target_met")
    return Door(
        site=site, device=device, state=state, last_seen=seen,
        outbox_depth=_int(_get(status, "outbox", "depth")), software=_text(_get(status, "versions", "software")),
        gallery_version=_int(ack.get("version")), ack_result=_text(ack.get("result")),
        target_met=target_met if isinstance(target_met, bool) else None,
        residents=_int(_get(status, "recognition", "residents")),
        location=_text(_get(status, "location", "state")), heard_at=heard_at,
        status_gallery_version=_int(_get(status, "gallery", "version")),
    )


def _json(text: str | None) -> dict[str, Any]:
    """A filed status or ack; one filed before :func:`shown` (deeply nested, say) is read as nothing."""
    try:
        got = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        return {}
    return got if isinstance(got, dict) else {}


#: A status time past this (the year 3000) is no time a page can show.
TIME_LIMIT = 32503680000.0


def _number(v) -> float | None:
    """A finite number (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, int):  # JSON's integers have no bound: 10**400 has no float
        return float(v) if abs(v) < 2**63 else None
    return v if math.isfinite(v) else None


def _int(v) -> int | None:
    """A whole number a page can show (not a bool, not infinite, not text), else None."""
    n = _number(v)
    return int(n) if n is not None and n == int(n) and abs(n) < 2**63 else None


def _text(v, limit: int = 64) -> str | None:
    return v[:limit] if isinstance(v, str) else None


def doors(store: Store, site: str, *, offline_after_s: float = 300.0, now: float | None = None) -> list[Door]:
    now = time.time() if now is None else now
    with store.transaction() as cur:
        cur.execute(store.q("SELECT site, device, status, ack, heard_at FROM console_doors WHERE site = ?"
                            " ORDER BY device"), [site])
        rows = cur.fetchall()
    return [_door(r, now, offline_after_s) for r in rows]
