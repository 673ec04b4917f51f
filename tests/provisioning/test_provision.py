"""Provisioning codes: signed by the fleet root key, verified, taken in one step, reset only when signed.

Real key files, a real CA certificate and a real state folder per test; the
commands run in-process. Codes shown to a camera are in test_provision_qr.py.
"""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from fleet import DEVICE, LAT, LON, SITE, expired_code, fleet, make_ca, make_fleet  # noqa: F401
from kiosk.admin import main as admin_main
from kiosk.capture.qr import decode_qr
from kiosk.cli import main as kiosk_main
from kiosk.errors import KeyFileError, NotProvisioned, ProvisioningRefused
from kiosk.provisioning import bundle as bmod
from kiosk.provisioning.store import ProvisioningStore
from kiosk.provisioning.trust import RootKeys, generate_root
from kiosk.sync import keys as keymod


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def refusal(code, fleet, **kw) -> str:
    with pytest.raises(ProvisioningRefused) as e:
        bmod.read_bundle(code, RootKeys.load(fleet.root_public), **kw)
    return e.value.reason


# -- the fleet operator's side ------------------------------------------------------


def test_fleet_key_command(tmp_path, capsys):
    out = tmp_path / "k" / "fleet-root.jwks"
    assert admin_main(["fleet-key", "--out", str(out)]) == 0
    pub = out.with_name("fleet-root.pub")
    assert mode(out) == 0o600 and mode(pub) == 0o644
    keys = json.loads(pub.read_text())["keys"]
    assert len(keys) == 1 and keys[0]["kid"].startswith("fleet/sig/") and "d" not in keys[0]
    assert json.loads(capsys.readouterr().out)["kid"] == keys[0]["kid"]
    assert admin_main(["fleet-key", "--out", str(out)]) == 1  # never overwritten by accident
    assert "refusing to overwrite" in capsys.readouterr().err


def test_provision_qr_command_writes_a_code_the_camera_can_read(fleet, tmp_path, capsys):
    png = tmp_path / "site.png"
    rc = admin_main([
        "provision-qr", "--fleet-key", str(fleet.root_private), "--site", SITE, "--device", DEVICE,
        "--name", "Riverside Gardens Block 7", "--address", "12 River Road, Xuhui, Shanghai",
        "--lat", str(LAT), "--lon", str(LON), "--radius", "120", "--broker", "mqtts://broker.example.org:8883",
        "--ca-file", str(fleet.ca), "--backend", str(fleet.backend_public), "--admin", str(fleet.admin_public),
        "--out", str(png), "--text-out", str(tmp_path / "site.txt"),
    ])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["site"] == SITE and summary["radius_m"] == 120.0
    import cv2

    (payload,) = decode_qr(cv2.imread(str(png)))
    assert payload.decode() == (tmp_path / "site.txt").read_text().strip()
    b = bmod.read_bundle(payload, RootKeys.load(fleet.root_public))
    assert (b.site, b.device_id, b.latitude, b.longitude, b.radius_m) == (SITE, DEVICE, LAT, LON, 120.0)
    assert b.backend.signing_kid == keymod.load_public_one(fleet.backend_public).signing_kid
    assert b.admin.encryption_kid == keymod.load_public_one(fleet.admin_public).encryption_kid
    assert 23 * 3600 < b.expires_at - time.time() <= 24 * 3600
    assert len(payload) < 1000  # version 24 or less: readable at ~3.5 px per module in a 540-line frame


def test_provision_qr_refuses_bad_input(fleet, tmp_path, capsys):
    base = ["provision-qr", "--fleet-key", str(fleet.root_private), "--site", SITE, "--name", "n",
            "--address", "a", "--lon", str(LON), "--broker", "mqtts://b.example:8883", "--ca-sha256",
            "AB:" * 31 + "AB", "--backend", str(fleet.backend_public), "--admin", str(fleet.admin_public),
            "--out", str(tmp_path / "x.png")]
    assert admin_main([*base, "--lat", "91"]) == 2
    assert "lat" in capsys.readouterr().err
    assert admin_main([*base, "--lat", "1", "--radius", "-5"]) == 2
    assert admin_main([*base[:-6], "--backend", str(fleet.admin_public), "--admin", str(fleet.admin_public),
                       "--out", str(tmp_path / "x.png"), "--lat", "1"]) == 2
    assert "not the back end's" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# -- verifying a code ---------------------------------------------------------------


def test_good_code_verifies(fleet):
    b = bmod.read_bundle(fleet.code(), RootKeys.load(fleet.root_public))
    assert b.site == SITE and b.signed_by == fleet.root.get("kid")


def test_forged_code_is_refused(fleet):
    header, payload, sig = fleet.code().split(".")
    other = fleet.code(site="block-8").split(".")[1]
    assert refusal(f"{header}.{other}.{sig}", fleet) == "bad_signature"
    # Signed by a key that claims to be the root key.
    impostor = generate_root()
    forged = bmod.sign_bundle(fleet.bundle(), impostor).split(".")
    import base64

    hdr = json.loads(base64.urlsafe_b64decode(forged[0] + "=="))
    assert hdr["kid"] != fleet.root.get("kid")
    assert refusal(f"{header}.{forged[1]}.{forged[2]}", fleet) == "bad_signature"


def test_foreign_fleet_code_is_refused(fleet, tmp_path):
    other = make_fleet(tmp_path / "other-fleet")
    code = other.code()
    assert refusal(code, fleet) == "unknown_signer"
    assert "another fleet" in bmod.MESSAGES["unknown_signer"]


def test_expired_code_is_refused_past_the_allowed_skew(fleet):
    code = expired_code(fleet)  # expired two hours ago
    assert refusal(code, fleet) == "expired"
    assert refusal(code, fleet, skew_s=3600) == "expired"
    assert bmod.read_bundle(code, RootKeys.load(fleet.root_public), skew_s=3 * 3600).site == SITE
    assert bmod.read_bundle(code, RootKeys.load(fleet.root_public), check_expiry=False).site == SITE


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95, 0.999])
def test_truncated_code_is_refused(fleet, keep):
    code = fleet.code()
    assert refusal(code[: int(len(code) * keep)], fleet) in ("malformed", "bad_signature")


def test_other_kinds_of_code_are_not_provisioning_codes(fleet):
    reset = bmod.sign_reset(SITE, DEVICE, fleet.root)
    assert refusal(reset, fleet) == "wrong_type"
    assert refusal("https://example.org/menu", fleet) == "malformed"
    assert refusal(b"\xff\xfe binary", fleet) == "malformed"


def test_signed_but_unusable_content_is_refused(fleet):
    from kiosk.sync.envelope import sign_compact

    claims = fleet.bundle().claims() | {"lat": 123.0}
    assert refusal(sign_compact(claims, fleet.root, typ=bmod.PROVISION_TYP), fleet) == "bad_content"
    claims = fleet.bundle().claims() | {"mqtt": "mqtt://broker.example.org:1883"}  # plain MQTT off the device
    assert refusal(sign_compact(claims, fleet.root, typ=bmod.PROVISION_TYP), fleet) == "bad_content"
    claims = fleet.bundle().claims() | {"extra": 1}
    assert refusal(sign_compact(claims, fleet.root, typ=bmod.PROVISION_TYP), fleet) == "bad_content"


# -- taking a code on the device ------------------------------------------------------


def test_install_writes_everything_in_one_step(fleet, state_dir):
    cfg = fleet.config(state_dir)
    store = ProvisioningStore(cfg)
    assert store.enabled and not store.provisioned and store.load() is None
    bundle = store.install(fleet.code())
    d = state_dir / "provisioning"
    assert sorted(p.name for p in d.iterdir()) == [
        "admin.pub.jwks", "backend.pub.jwks", "bundle.jws", "device.jwks", "device.pub.jwks"]
    assert mode(d) == 0o700 and mode(d / "device.jwks") == 0o600 and mode(d / "backend.pub.jwks") == 0o644
    assert not [p for p in state_dir.iterdir() if p.name.startswith(".")]  # no temporary folder left
    device = keymod.load_private(d / "device.jwks")
    assert device.owner == f"{SITE}/{DEVICE}"
    assert keymod.load_public_one(d / "device.pub.jwks").signing_kid == device.signing_kid
    assert store.load() == bundle
    applied = store.apply(cfg, bundle)
    assert (applied.device.site, applied.device.device_id) == (SITE, DEVICE)
    assert (applied.location.latitude, applied.location.longitude, applied.location.radius_m) == (LAT, LON, 120.0)
    assert applied.mqtt.url == "mqtts://broker.example.org:8883"
    assert applied.keys.backend_public_key == d / "backend.pub.jwks"
    # What the publisher loads at start-up is what provisioning wrote.
    dev, backend = keymod.load_device_keys(applied)
    assert dev.signing_kid == device.signing_kid and backend.owner == keymod.BACKEND


def test_without_a_device_id_in_the_code_the_configured_one_is_kept(fleet, state_dir):
    cfg = fleet.config(state_dir, "").model_copy(update={"device": fleet.config(state_dir).device.model_copy(
        update={"device_id": "door-9"})})
    store = ProvisioningStore(cfg)
    bundle = store.install(fleet.code(device_id=None))
    assert store.apply(cfg, bundle).device.device_id == cfg.device.device_id == "door-9"
    assert keymod.load_private(store.directory / "device.jwks").owner == f"{SITE}/door-9"


def test_without_a_device_id_anywhere_the_code_is_refused(fleet, state_dir):
    store = ProvisioningStore(fleet.config(state_dir))
    with pytest.raises(ProvisioningRefused) as e:
        store.install(fleet.code(device_id=None))
    assert e.value.reason == "no_device" and not store.provisioned


@pytest.mark.parametrize("bad", ["forged", "expired", "truncated", "foreign"])
def test_a_refused_code_leaves_the_device_unprovisioned(fleet, state_dir, tmp_path, bad):
    code = fleet.code()
    code = {
        "forged": code.rsplit(".", 1)[0] + "." + fleet.code(site="x").rsplit(".", 1)[1],
        "expired": expired_code(fleet),
        "truncated": code[:-40],
        "foreign": make_fleet(tmp_path / "foreign").code(),
    }[bad]
    store = ProvisioningStore(fleet.config(state_dir))
    with pytest.raises(ProvisioningRefused):
        store.install(code)
    assert not store.provisioned and list(state_dir.iterdir()) == []


def test_reprovisioning_needs_a_reset(fleet, state_dir):
    store = ProvisioningStore(fleet.config(state_dir))
    store.install(fleet.code())
    before = (store.directory / "device.jwks").read_bytes()
    with pytest.raises(ProvisioningRefused) as e:
        store.install(fleet.code(site="block-8"))
    assert e.value.reason == "already_provisioned"
    assert store.load().site == SITE and (store.directory / "device.jwks").read_bytes() == before


def test_a_stored_code_that_no_longer_verifies_stops_the_device(fleet, state_dir, tmp_path):
    store = ProvisioningStore(fleet.config(state_dir))
    store.install(fleet.code())
    stored = store.directory / "bundle.jws"
    h, p, s = stored.read_text().strip().split(".")
    stored.write_text(f"{h}.{fleet.code(radius_m=5000.0).split('.')[1]}.{s}\n")  # widen the radius
    with pytest.raises(NotProvisioned, match="does not verify"):
        store.load()
    # Or the root key was replaced by another fleet's.
    stored.write_text(fleet.code() + "\n")
    other = make_fleet(tmp_path / "other")
    store.root_key_path.write_text(other.root_public.read_text())
    with pytest.raises(NotProvisioned):
        ProvisioningStore(fleet.config(state_dir)).load()


def test_provisioning_off_without_a_root_key(state_dir, tmp_path):
    from kiosk.config import parse_config
    from kiosk.provisioning.startup import provisioned_config

    cfg = parse_config(f'[device]\nstate_dir = "{state_dir}"\n[provisioning]\nfleet_root_key = "{tmp_path}/none.pub"\n')
    assert provisioned_config(cfg) == (cfg, None, None)


# -- resets ---------------------------------------------------------------------------


def provisioned(fleet, state_dir):
    store = ProvisioningStore(fleet.config(state_dir))
    store.install(fleet.code())
    return store


def test_signed_reset_unprovisions_and_erases(fleet, state_dir):
    from kiosk.db import open_database

    store = provisioned(fleet, state_dir)
    db = open_database(state_dir / "kiosk.db")
    db.close()
    (state_dir / "template.key").write_bytes(b"k" * 32)
    store.reset(bmod.sign_reset(SITE, DEVICE, fleet.root))
    assert not store.provisioned
    assert sorted(p.name for p in state_dir.iterdir()) == ["provisioning.resets.json"]  # the reset's nonce, kept
    store.install(fleet.code(site="block-8"))  # and it takes a new code
    assert store.load().site == "block-8"


def test_a_reset_cut_short_leaves_no_old_resident_behind(fleet, state_dir, monkeypatch):
    """Power lost mid-reset, here when the provisioning folder is about to go: the old site's database and
    template key are gone already (and their folder synced), so no new site's code can come to a device holding
    them; the device is still the old site's, with nobody in its gallery."""
    import os

    from kiosk.db import open_database

    store = provisioned(fleet, state_dir)
    open_database(state_dir / "kiosk.db").close()
    (state_dir / "template.key").write_bytes(b"k" * 32)

    def power_cut(src, dst):
        raise OSError("the power went")

    monkeypatch.setattr(os, "rename", power_cut)
    with pytest.raises(OSError, match="the power went"):
        store.reset(bmod.sign_reset(SITE, DEVICE, fleet.root))
    assert not (state_dir / "kiosk.db").exists() and not (state_dir / "template.key").exists()
    assert store.provisioned and store.load().site == SITE


def test_reset_refusals(fleet, state_dir, tmp_path):
    store = ProvisioningStore(fleet.config(state_dir))
    with pytest.raises(ProvisioningRefused) as e:
        store.reset(bmod.sign_reset(SITE, DEVICE, fleet.root))
    assert e.value.reason == "not_provisioned"
    store.install(fleet.code())
    cases = {
        "wrong_device": bmod.sign_reset(SITE, "door-2", fleet.root),
        "stale_reset": bmod.sign_reset(SITE, DEVICE, fleet.root, now=time.time() - 60),
        "expired": bmod.sign_reset(SITE, DEVICE, fleet.root, now=time.time() + 10, valid_s=-3600),
        "unknown_signer": bmod.sign_reset(SITE, DEVICE, make_fleet(tmp_path / "f2").root),
        "wrong_type": fleet.code(),
    }
    for reason, code in cases.items():
        with pytest.raises(ProvisioningRefused) as e:
            store.reset(code)
        assert e.value.reason == reason
    assert store.load().site == SITE


def test_reset_refused_while_events_are_undelivered(fleet, state_dir):
    from kiosk.db import open_database
    from kiosk.sync.events.outbox import Outbox

    store = provisioned(fleet, state_dir)
    db = open_database(state_dir / "kiosk.db")
    Outbox(db, site=SITE, device=DEVICE).commit_event("location", "VERIFIED")
    db.close()
    reset = bmod.sign_reset(SITE, DEVICE, fleet.root)
    with pytest.raises(ProvisioningRefused) as e:
        store.reset(reset)
    assert e.value.reason == "undelivered_events" and store.provisioned
    store.reset(reset, discard_undelivered=True)
    assert not store.provisioned and not (state_dir / "kiosk.db").exists()


# -- the broker's CA pin ------------------------------------------------------------------


def test_ca_certificate_must_match_the_pin(fleet, state_dir, tmp_path):
    store = provisioned(fleet, state_dir)
    other = make_ca(tmp_path / "other-ca.pem", "someone else's CA")
    with pytest.raises(KeyFileError, match="pinned"):
        store.install_ca(other.read_bytes())
    chain = other.read_bytes() + fleet.ca.read_bytes()  # the pinned one among others: only it is kept
    path = store.install_ca(chain)
    assert path.read_bytes() == fleet.ca.read_bytes()
    cfg = store.apply(fleet.config(state_dir, "[mqtt]\nenabled = true\n"), store.load())
    assert cfg.mqtt.ca_file == path
    store.check_ca(cfg, store.load())
    path.write_bytes(other.read_bytes())
    with pytest.raises(KeyFileError, match="not the broker CA"):
        store.check_ca(cfg, store.load())


# -- `kiosk provision` --------------------------------------------------------------------


def test_kiosk_provision_from_a_code_file(fleet, state_dir, tmp_path, capsys):
    cfg = fleet.config_file(state_dir)
    (tmp_path / "bad.txt").write_text(expired_code(fleet))
    assert kiosk_main(["provision", "--config", str(cfg), "--code-file", str(tmp_path / "bad.txt")]) == 1
    assert "REFUSED: this code has expired" in capsys.readouterr().err
    (tmp_path / "code.txt").write_text(fleet.code() + "\n")
    assert kiosk_main(["provision", "--config", str(cfg), "--code-file", str(tmp_path / "code.txt")]) == 0
    out = capsys.readouterr().out
    assert f'"site": "{SITE}"' in out and f"{SITE}/{DEVICE}/sig/" in out
    assert kiosk_main(["provision", "--config", str(cfg), "--status"]) == 0
    assert json.loads(capsys.readouterr().out)["provisioned"] is True
    assert kiosk_main(["provision", "--config", str(cfg), "--code-file", str(tmp_path / "code.txt")]) == 1
    assert "re-provisioning needs a signed reset" in capsys.readouterr().err
    (tmp_path / "reset.txt").write_text(bmod.sign_reset(SITE, DEVICE, fleet.root))
    assert kiosk_main(["provision", "--config", str(cfg), "--reset", "--code-file", str(tmp_path / "reset.txt")]) == 0
    assert kiosk_main(["provision", "--config", str(cfg), "--status"]) == 1


def test_kiosk_provision_without_a_root_key_is_a_config_error(state_dir, tmp_path, capsys):
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[device]\nstate_dir = "{state_dir}"\n[provisioning]\nfleet_root_key = "{tmp_path}/none.pub"\n')
    assert kiosk_main(["provision", "--config", str(cfg), "--status"]) == 78
    assert "no fleet root key" in capsys.readouterr().err


def test_selftest_checks_what_the_provisioning_says(fleet, state_dir, capsys):
    cfg = fleet.config_file(state_dir)
    assert kiosk_main(["selftest", "--config", str(cfg), "--only", "location", "--json"]) == 0
    (check,) = json.loads(capsys.readouterr().out)["checks"]
    assert check["status"] == "skipped"  # no service location before provisioning
    ProvisioningStore(fleet.config(state_dir)).install(fleet.code())
    assert kiosk_main(["selftest", "--config", str(cfg), "--only", "location", "--json"]) == 0
    (check,) = json.loads(capsys.readouterr().out)["checks"]
    assert check["status"] == "ok" and f"{LAT:.5f},{LON:.5f} within 120 m" in check["detail"]


def test_codes_that_are_not_text_are_refused_not_raised(fleet, state_dir):
    store = ProvisioningStore(fleet.config(state_dir))
    for payload in (b"\xc3\x28 not UTF-8 or ASCII", "caf\u00e9".encode(), b""):
        with pytest.raises(ProvisioningRefused) as e:
            store.install(payload)
        assert e.value.reason == "malformed"
    (store.directory).mkdir()
    (store.directory / "bundle.jws").write_bytes(b"\xff\xfe")
    with pytest.raises(NotProvisioned):
        store.load()
