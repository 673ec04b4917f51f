"""What a door tells the back end about how close its strangers come: the site claims of its events.

Every face decision carries its gap (how far the face fell short of the rule
in force, rounded to 0.001) and that rule's threshold, target and gallery
size; an UNKNOWN event carries nothing of whom the face came near. A
resident turned away by the face usually tries again (the face, or the QR
credential): a check-in within :data:`RETRY_WINDOW_S` of an UNKNOWN visit
whose nearest resident was this resident names that visit (``retry_of``), so
that the back end counts it as a resident turned away, not a stranger. Whom
an UNKNOWN visit came near is kept in memory for that window only. A check-in
a QR credential confirmed (second factor) says whether the face alone named
the resident (``face_alone``). See :mod:`kiosk.siteestimate`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .decide import Decision, OperatingPoint, Outcome

#: How long after an UNKNOWN visit a check-in by its nearest resident counts as that resident's retry.
RETRY_WINDOW_S = 120.0
#: Gaps are published to this many decimals (what the estimate needs, and no more).
GAP_DECIMALS = 3
#: Face decisions (the outcomes a face's votes decided).
_FACE_OUTCOMES = (Outcome.ACCEPTED, Outcome.UNKNOWN, Outcome.SHOW_QR, Outcome.DUPLICATE, Outcome.SPOOF,
                  Outcome.LOOK_AT_CAMERA)


class SiteEvidence:
    """The site claims of each decision, and the UNKNOWN visits a resident's retry may name."""

    def __init__(self, window_s: float = RETRY_WINDOW_S, limit: int = 256):
        self.window_s = window_s
        self._pending: deque[tuple[float, str, str]] = deque(maxlen=limit)  # (wall time, nearest, event id)

    def claims(self, d: Decision, point: OperatingPoint, residents: int, now: float) -> dict[str, Any]:
        """The claims to add to ``d``'s event (committed at wall time ``now``)."""
        out: dict[str, Any] = {}
        if d.method in ("face", "face+qr") and d.outcome in _FACE_OUTCOMES:
            out["gap"] = None if d.gap is None else round(float(d.gap), GAP_DECIMALS)
            out["threshold"] = round(float(point.threshold), 4)
            out["fpir_target"] = point.fpir_target if point.source == "calibration" else None
            out["gallery_size"] = int(residents)
        if d.method == "face+qr" and d.face_alone is not None:
            out["face_alone"] = bool(d.face_alone)
        if d.outcome is Outcome.ACCEPTED and d.resident_id is not None:
            retry = self._take(d.resident_id, now)
            if retry is not None:
                out["retry_of"] = retry
        return out

    def committed(self, d: Decision, event_id: str, now: float) -> None:
        """An UNKNOWN visit is stored: a retry by its nearest resident may name it for a while."""
        self._forget(now)
        if d.outcome is Outcome.UNKNOWN and d.method == "face" and d.nearest is not None:
            self._pending.append((now, d.nearest, event_id))

    def _take(self, resident_id: str, now: float) -> str | None:
        self._forget(now)
        for i in range(len(self._pending) - 1, -1, -1):  # the latest first
            t, nearest, event_id = self._pending[i]
            if nearest == resident_id:
                del self._pending[i]
                return event_id
        return None

    def _forget(self, now: float) -> None:
        while self._pending and now - self._pending[0][0] > self.window_s:
            self._pending.popleft()
