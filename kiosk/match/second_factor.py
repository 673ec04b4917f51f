"""The QR credential as a second factor: the face narrows the candidates, the credential confirms.

Where a gallery is too large for a face alone to keep strangers out at the
target rate (``match.second_factor``), a face visit the candidate rule
names ends as SHOW_QR, with the residents it could be. A resident's QR
credential (verified as ever by :mod:`kiosk.qrtoken`) then opens the door
only for one of those candidates, within ``match.second_factor_window_s``
of the face: a stranger needs both a resident's face and their phone.

Either may come first: a credential shown while the face is still being
judged waits for it (the window), since a verified code's nonce is used up
and could not be shown again. A credential for someone the face was not,
or with no face at all, is refused (``not_a_face_candidate``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from .decide import Decision, Outcome

log = logging.getLogger(__name__)

#: The refusal reason of a credential for a resident the face was not.
NOT_A_CANDIDATE = "not_a_face_candidate"


@dataclass(frozen=True)
class _Narrowed:
    decision: Decision  # the SHOW_QR face decision
    until: float


@dataclass(frozen=True)
class _Waiting:
    decision: Decision  # an accepted QR credential
    until: float


class SecondFactor:
    """Pairs SHOW_QR face decisions with accepted QR credentials (frame time throughout)."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._faces: list[_Narrowed] = []
        self._codes: list[_Waiting] = []
        self.confirmed = 0
        self.refused = 0

    def narrowed(self, face: Decision) -> None:
        """A face visit ended as SHOW_QR: its candidates wait for a credential."""
        self._faces.append(_Narrowed(face, face.timestamp + self.window_s))

    def review(self, decisions: list[Decision], now: float) -> list[Decision]:
        """The decisions as the door should take them: each accepted QR credential confirmed
        (ACCEPTED, method ``face+qr``), held for a face still to come, or refused."""
        out: list[Decision] = []
        for d in decisions:
            if d.method == "qr" and d.outcome is Outcome.ACCEPTED:
                confirmed = self._confirm(d)
                if confirmed is not None:
                    out.append(confirmed)
                else:
                    self._codes.append(_Waiting(d, d.timestamp + self.window_s))
            else:
                out.append(d)
                if d.outcome is Outcome.SHOW_QR:
                    out += self._waiting_for(d)
        out += self._expire(now)
        return out

    @property
    def waiting(self) -> bool:
        return bool(self._faces or self._codes)

    def _confirm(self, code: Decision) -> Decision | None:
        for i in range(len(self._faces) - 1, -1, -1):
            face = self._faces[i].decision
            if code.resident_id in face.candidates and code.timestamp <= self._faces[i].until:
                del self._faces[i]
                self.confirmed += 1
                log.info("track %d: a QR credential confirms the face", face.track_id)  # who: in the check-in, not the journal
                return replace(code, outcome=Outcome.ACCEPTED, track_id=face.track_id, method="face+qr",
                               distance=face.distance, margin=face.margin, frames=face.frames + code.frames,
                               liveness=dict(face.liveness))
        return None

    def _waiting_for(self, face: Decision) -> list[Decision]:
        """Credentials that came before this face and name one of its candidates."""
        for i, w in enumerate(self._codes):
            if w.decision.resident_id in face.candidates and face.timestamp <= w.until:
                del self._codes[i]
                confirmed = self._confirm(replace(w.decision, timestamp=face.timestamp))
                return [confirmed] if confirmed is not None else []
        return []

    def _expire(self, now: float, everything: bool = False) -> list[Decision]:
        self._faces = [f for f in self._faces if f.until >= now and not everything]
        out, keep = [], []
        for w in self._codes:
            if w.until < now or everything:
                self.refused += 1
                out.append(replace(w.decision, outcome=Outcome.QR_REFUSED, reason=NOT_A_CANDIDATE, timestamp=now))
            else:
                keep.append(w)
        self._codes = keep
        return out

    def flush(self, now: float) -> list[Decision]:
        """The source is over: every credential still waiting is refused."""
        return self._expire(now, everything=True)
