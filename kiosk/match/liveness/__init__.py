"""Is the face at the door alive? Cheap cues from the frames of one visit, one module each.

:mod:`.check` weighs them into the verdict; :mod:`.blink`, :mod:`.parallax`,
:mod:`.moire` and :mod:`.appearance` are the cues.
"""

from .appearance import AppearanceModel
from .blink import eye_aspect_ratio, face_speed, interocular
from .check import CUES, Evidence, Liveness
from .moire import moire_score
from .parallax import similarity_shift, surround_coherence

__all__ = ["AppearanceModel", "CUES", "Evidence", "Liveness", "eye_aspect_ratio", "face_speed", "interocular",
           "moire_score", "similarity_shift", "surround_coherence"]
