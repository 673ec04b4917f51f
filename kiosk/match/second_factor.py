"""The QR credential as a second factor: the face narrows the candidates, the credential confirms.

Where a gallery is too large for a face alone to keep strangers out at the
target rate (``match.second_factor``), a face visit the candidate rule
names ends as SHOW_QR, with the residents it could be. A resident's QR
credential (verified as ever by :mod:`kiosk.qrtoken`) then opens the door
only for a face that is in view when the code is read, on that face's own
track: a stranger needs both a resident's face and their phone, at once.

- A face in view: the code confirms an in-view track whose candidates hold
  the code's resident; a track still being judged is waited for, as long as
  it is followed. A face that narrowed to that resident but is no longer in
  view counts for nothing while other faces are: it may have walked on, and
  whoever stands there now holds the phone.
- No face in view: the phone may hide the face for a moment. A track that
  narrowed to the resident and was last seen at most
  ``match.second_factor_window_s`` (a few seconds) before still counts; else
  the code waits that long for a face to come into view, and only for the
  tracks then in view.

A code for someone no face in view could be is refused
(``not_a_face_candidate``); a code with no face at all within the window,
``no_face_in_view``. Refused, not held: a verified code's nonce is used up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from .decide import Decision, Outcome

log = logging.getLogger(__name__)

#: The refusal reason of a credential for a resident no face in view narrowed to.
NOT_A_CANDIDATE = "not_a_face_candidate"
#: The refusal reason of a credential shown with no face in view (nor one within the window).
NO_FACE = "no_face_in_view"


class FaceInView(Protocol):
    """What the pairing reads of a face track the tracker still follows (:class:`~kiosk.match.track.Track`)."""

    id: int
    last_seen: float
    decision: Decision | None


@dataclass(frozen=True)
class _Gone:
    decision: Decision  # the SHOW_QR decision of a track that has ended
    last_seen: float


@dataclass
class _Code:
    decision: Decision  # an accepted QR credential
    read_at: float
    tracks: set[int] | None  # the undecided faces in view it waits for; None: no face was in view


def _narrowed(d: Decision | None) -> bool:
    return d is not None and d.outcome is Outcome.SHOW_QR


class SecondFactor:
    """Pairs accepted QR credentials with SHOW_QR face tracks in view (frame time throughout)."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._live: dict[int, _Gone] = {}  # narrowed tracks in view at the last frame
        self._gone: dict[int, _Gone] = {}  # narrowed tracks ended at most window_s ago
        self._used: set[int] = set()  # tracks a credential has confirmed: one credential each
        self._codes: list[_Code] = []
        self.confirmed = 0
        self.refused = 0

    def review(self, decisions: list[Decision], now: float, in_view: Mapping[int, FaceInView]) -> list[Decision]:
        """The decisions as the door should take them: each accepted QR credential confirmed
        (ACCEPTED, method ``face+qr``, on the face's track), held for a face in view still being
        judged, or refused.

        :param now: this frame's time.
        :param in_view: the face tracks the tracker follows after this frame, by track id.
        """
        self._follow(decisions, now, in_view)
        out: list[Decision] = []
        for d in decisions:
            if d.method == "qr" and d.outcome is Outcome.ACCEPTED:
                self._codes.append(_Code(d, now, None))
            else:
                out.append(d)
        return out + self._settle(now, in_view)

    @property
    def waiting(self) -> bool:
        return bool(self._codes or self._live or self._gone)

    def flush(self, now: float) -> list[Decision]:
        """The source is over: every credential still waiting is refused."""
        out = [self._refuse(c, now) for c in self._codes]
        self._codes = []
        self._live.clear()
        self._gone.clear()
        self._used.clear()
        return out

    # -- state ---------------------------------------------------------------

    def _follow(self, decisions: list[Decision], now: float, in_view: Mapping[int, FaceInView]) -> None:
        """Which narrowed faces are in view, and which left (kept ``window_s`` after last seen)."""
        for tid, gone in self._live.items():
            if tid not in in_view:
                self._gone[tid] = gone
        # A visit decided as it ended: its SHOW_QR comes with the frame that ended it.
        for d in decisions:
            if _narrowed(d) and d.track_id not in in_view:
                self._gone[d.track_id] = _Gone(d, d.timestamp)
        self._live = {tid: _Gone(tr.decision, tr.last_seen) for tid, tr in in_view.items() if _narrowed(tr.decision)}
        self._gone = {tid: g for tid, g in self._gone.items() if now - g.last_seen <= self.window_s}
        self._used &= set(self._live) | set(self._gone)

    # -- pairing -------------------------------------------------------------

    def _settle(self, now: float, in_view: Mapping[int, FaceInView]) -> list[Decision]:
        out, keep = [], []
        for code in self._codes:
            d = self._pair(code, now, in_view)
            if d is None:
                keep.append(code)
            else:
                out.append(d)
        self._codes = keep
        return out

    def _pair(self, code: _Code, now: float, in_view: Mapping[int, FaceInView]) -> Decision | None:
        """The code's decision now (confirmed or refused), or None while it waits."""
        rid = code.decision.resident_id
        if code.tracks is None:
            late = now - code.read_at > self.window_s
            if in_view:  # a face came into view: the code waits for those tracks only
                if late:
                    return self._refuse(code, now)
                code.tracks = set(in_view)
            else:  # none in view: a face that narrowed to this resident a moment ago
                faces = [g for tid, g in self._gone.items() if tid not in self._used and rid in g.decision.candidates]
                if faces:
                    return self._confirm(code, max(faces, key=lambda g: g.last_seen).decision, now)
                return self._refuse(code, now) if late else None
        # Only the faces the code waits for, as long as they are in view (or their visit just ended).
        faces = []
        for tid in sorted(code.tracks):
            d = in_view[tid].decision if tid in in_view else (self._gone[tid].decision if tid in self._gone else None)
            if d is None and tid in in_view:
                continue  # still being judged
            if _narrowed(d) and tid not in self._used and rid in d.candidates:
                faces.append(d)
            code.tracks.discard(tid)
        if faces:  # the face the resident is the nearest candidate of
            return self._confirm(code, min(faces, key=lambda d: d.candidates.index(rid)), now)
        return self._refuse(code, now) if not code.tracks else None

    def _confirm(self, code: _Code, face: Decision, now: float) -> Decision:
        self._used.add(face.track_id)
        self.confirmed += 1
        log.info("track %d: a QR credential confirms the face", face.track_id)  # who: in the check-in, not the journal
        c = code.decision
        return replace(c, outcome=Outcome.ACCEPTED, track_id=face.track_id, method="face+qr", timestamp=now,
                       distance=face.distance, margin=face.margin, frames=face.frames + c.frames,
                       liveness=dict(face.liveness), gap=face.gap, face_alone=face.named == c.resident_id,
                       descriptor=face.descriptor)

    def _refuse(self, code: _Code, now: float) -> Decision:
        self.refused += 1
        reason = NO_FACE if code.tracks is None else NOT_A_CANDIDATE
        log.info("a QR credential is refused: %s", reason)
        return replace(code.decision, outcome=Outcome.QR_REFUSED, reason=reason, timestamp=now)
