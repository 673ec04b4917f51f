"""The doors' keys at the back end: one key per door, and a removed key file stops counting without a reload."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.ingest_kit import REPO, SimulatedSite, _env, wait_for
from ingest_rig import IngestRig
from kiosk.errors import KeyFileError
from kiosk.sync import keys as keymod


def validate(config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiosk.backend.ingest", "--config", str(config),
                           "--validate-config"], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=60)


def use_as_a_list(party: keymod.PartyKeys) -> dict:
    """A door's public JWK Set with each key's "use" written as a list (["sig"]), as a hand-edited file might."""
    jwks = {"keys": [keymod.jwk_dict(k, private=False) for k in (party.signing, party.encryption)]}
    for key in jwks["keys"]:
        key["use"] = [key["use"]]
    return jwks


def test_a_key_whose_use_is_not_sig_or_enc_is_refused_with_its_file(broker, tmp_path):
    fleet = SimulatedSite(tmp_path / "fleet", broker, 1)
    config = fleet.ingest_config(f"sqlite:///{tmp_path / 'events.db'}")
    odd = fleet.devices_dir / "door-9.pub.jwks"
    odd.write_text(json.dumps(use_as_a_list(keymod.generate(f"{fleet.site}/door-9"))))
    with pytest.raises(KeyFileError, match=r"door-9.pub.jwks: key .* has use \['sig'\], not 'sig' or 'enc'"):
        keymod.load_public(odd)
    out = validate(config)
    assert out.returncode == 78 and "door-9.pub.jwks: key" in out.stderr, out
    assert "Traceback" not in out.stderr


def test_two_keys_for_one_door_are_refused(broker, tmp_path):
    fleet = SimulatedSite(tmp_path / "fleet", broker, 2)
    config = fleet.ingest_config(f"sqlite:///{tmp_path / 'events.db'}")
    assert validate(config).returncode == 0
    second = keymod.generate(f"{fleet.site}/door-1")  # a second kiosk provisioned as door-1
    keymod.save_public(fleet.devices_dir / "door-1-again.pub.jwks", second, overwrite=True)
    out = validate(config)
    assert out.returncode == 78, out
    assert "two different keys for elm-court/door-1" in out.stderr
    with pytest.raises(KeyFileError, match="two different keys"):
        keymod.KeyRing.from_files(sorted(fleet.devices_dir.glob("*.pub.jwks")))
    # The same key in two files is one key, not two.
    keymod.save_public(fleet.devices_dir / "door-1-again.pub.jwks", fleet.keys["door-1"], overwrite=True)
    assert validate(config).returncode == 0


@pytest.mark.e2e
def test_a_removed_key_file_stops_counting_without_a_reload(broker, tmp_path):
    rig = IngestRig(broker, tmp_path, f"sqlite:///{tmp_path / 'events.db'}").start()
    try:
        assert rig.wait_stored(rig.genuine("door-1"))
        key_file = rig.fleet.devices_dir / f"{rig.fleet.site}.door-1.pub.jwks"
        kept = key_file.read_bytes()
        key_file.unlink()  # the door was stolen: its key is withdrawn, nobody sends SIGHUP
        assert wait_for(lambda: "device keys read again: 1 doors" in rig.ingest.log_text(), 15)
        claims = rig.claims("door-1")
        sha = rig.publish("door-1", rig.sealed("door-1", claims))
        assert [r["reason"] for r in rig.wait_refused(sha)] == ["unknown_signer"]
        assert claims["event_id"] not in rig.stored_ids()
        assert rig.wait_stored(rig.genuine("door-2"))
        # A second key for door-2 appears: refused, and the keys read before stay in use.
        keymod.save_public(rig.fleet.devices_dir / "intruder.pub.jwks", keymod.generate(f"{rig.fleet.site}/door-2"))
        assert wait_for(lambda: "two different keys for elm-court/door-2" in rig.ingest.log_text(), 15)
        assert rig.wait_stored(rig.genuine("door-2"))
        (rig.fleet.devices_dir / "intruder.pub.jwks").unlink()
        # A key file whose "use" is not a word (a list): named, and the keys read before stay in use. It raised a
        # TypeError that ended the ingest, and again at each restart.
        odd = rig.fleet.devices_dir / "odd.pub.jwks"
        odd.write_text(json.dumps(use_as_a_list(keymod.generate(f"{rig.fleet.site}/door-3"))))
        assert wait_for(lambda: f"{odd}: key" in rig.ingest.log_text(), 15)
        assert rig.wait_stored(rig.genuine("door-2"))
        assert rig.ingest.proc.poll() is None
        odd.unlink()
        key_file.write_bytes(kept)  # the door is back
        assert wait_for(lambda: "device keys read again: 2 doors" in rig.ingest.log_text(), 15)
        assert rig.wait_stored(rig.genuine("door-1"))
    finally:
        rig.close()
