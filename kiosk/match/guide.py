"""Guided capture: while a visit goes on, the reason its face fails a quality gate becomes an instruction.

The door screen and voice (:mod:`kiosk.prompts`) turn the reason into words:
too small → come closer, partly outside → move to the centre, too dark →
more light, turned away → face the camera, blurred → hold still. A reason
must hold for ``guide.after_s`` before it is given (one blurred frame says
nothing), and a new instruction comes at most every ``guide.every_s``, so the
screen does not flicker.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import GuideSettings
from .detect import BLURRED, PARTLY_OUTSIDE, TOO_DARK, TOO_SMALL, TURNED_AWAY, Face
from .track import Track

#: When a face fails several gates, the one to fix first (fixing it often fixes the later ones:
#: a face in more light is also sharper).
PRIORITY = (TOO_SMALL, PARTLY_OUTSIDE, TOO_DARK, TURNED_AWAY, BLURRED)
_KEY = "guide"


def main_reason(reasons: tuple[str, ...]) -> str | None:
    """The reason to act on first, of a face's failed gates (None: it passed them all)."""
    for r in PRIORITY:
        if r in reasons:
            return r
    return reasons[0] if reasons else None


@dataclass
class _State:
    reason: str | None = None  # the face's main reason on the last frame
    since: float = 0.0  # ... held since
    shown: str | None = None  # the last instruction given
    shown_at: float | None = None


class Guide:
    """Which instruction to give a visit now (one per recognising thread; state lives on the track)."""

    def __init__(self, settings: GuideSettings):
        self.settings = settings
        self.given = 0  # instructions given, for the stats

    def update(self, track: Track, face: Face, t: float) -> str | None:
        """The reason to tell the resident about on this frame (at frame time ``t``), or None."""
        st: _State = track.extras.setdefault(_KEY, _State())
        reason = main_reason(face.reasons)
        if reason != st.reason:
            st.reason, st.since = reason, t
        if reason is None:
            st.shown = None  # fixed: the same reason coming back is news again
            return None
        if reason == st.shown or t - st.since < self.settings.after_s:
            return None
        if st.shown_at is not None and t - st.shown_at < self.settings.every_s:
            return None
        st.shown, st.shown_at = reason, t
        self.given += 1
        return reason
