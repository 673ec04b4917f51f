"""What one system did on one video."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RunResult:
    frames: int = 0
    cpu_s: float = 0.0
    faces: int = 0
    descriptors: int = 0
    gate_open_frames: int | None = None
    outcomes: Counter = field(default_factory=Counter)  # ours: decisions by outcome
    identities: Counter = field(default_factory=Counter)  # id -> decisions (ours) or frames matched (baseline)
    face_widths: dict[str, list[int]] = field(default_factory=dict)  # id -> face widths when matched (baseline)
    distances: dict[str, list[float]] = field(default_factory=dict)  # id -> distances when matched (baseline)

    def add_identity(self, rid: str, width: int | None = None, distance: float | None = None) -> None:
        self.identities[rid] += 1
        if width is not None:
            self.face_widths.setdefault(rid, []).append(width)
        if distance is not None:
            self.distances.setdefault(rid, []).append(distance)

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000.0 * self.cpu_s / self.frames if self.frames else 0.0

    def as_json(self) -> dict:
        out = {
            "frames": self.frames,
            "cpu_s": round(self.cpu_s, 3),
            "cpu_ms_per_frame": round(self.cpu_ms_per_frame, 2),
            "faces": self.faces,
            "descriptors": self.descriptors,
            "identities": dict(sorted(self.identities.items())),
        }
        if self.gate_open_frames is not None:
            out["gate_open_frames"] = self.gate_open_frames
        if self.outcomes:
            out["decisions"] = dict(sorted(self.outcomes.items()))
        if self.face_widths:
            out["matched_face_width_px"] = {
                k: {"min": min(v), "median": sorted(v)[len(v) // 2], "max": max(v)} for k, v in sorted(self.face_widths.items())
            }
        if self.distances:
            out["matched_distance"] = {
                k: {"min": round(min(v), 3), "median": round(sorted(v)[len(v) // 2], 3)} for k, v in sorted(self.distances.items())
            }
        return out
