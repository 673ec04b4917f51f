"""Keys and envelopes: signed by the device, encrypted to the back end, readable by any JOSE library."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from joserfc import jwe as rfc_jwe
from joserfc import jws as rfc_jws
from joserfc.jwk import KeySet

from kiosk.config import parse_config
from kiosk.errors import ConfigError, EnvelopeError, KeyFileError
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import EVENT_TYP, open_sealed, seal

from jose_cross import to_jwcrypto

CLAIMS = {
    "event_id": "01890a5d-ac96-774b-bcce-b302099a8057",
    "seq": 7,
    "site": "test-site",
    "device": "kiosk-t1",
    "type": "checkin",
    "resident_id": "r-1",
    "distance": 0.31,
}


def _segments(token: str) -> list[dict]:
    return [json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))]


def test_round_trip_and_headers(device_keys, backend_keys):
    token = seal(CLAIMS, device_keys, backend_keys.public().encryption)
    header = _segments(token)[0]
    assert header == {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": backend_keys.encryption_kid, "cty": "JWT", "epk": header["epk"]}
    assert header["epk"]["crv"] == "P-256"
    # Nothing readable travels outside the encryption.
    assert "r-1" not in token and "checkin" not in token
    opened = open_sealed(token, backend_keys, keymod.KeyRing([device_keys]))
    assert opened.claims == CLAIMS
    assert opened.signer == "test-site/kiosk-t1"
    assert opened.signing_kid == device_keys.signing_kid


def test_an_independent_jose_library_decrypts_and_verifies(device_keys, backend_keys):
    """A back end on another stack (joserfc) opens the envelope with standard JWKs."""
    token = seal(CLAIMS, device_keys, backend_keys.public().encryption)
    private_set = KeySet.import_key_set(json.loads(json.dumps(backend_keys.to_jwks(private=True))))
    decrypted = rfc_jwe.decrypt_compact(token, private_set)
    assert decrypted.headers()["alg"] == "ECDH-ES+A256KW" and decrypted.headers()["enc"] == "A256GCM"
    public_set = KeySet.import_key_set(device_keys.to_jwks(private=False))
    signed = rfc_jws.deserialize_compact(decrypted.plaintext, public_set, algorithms=["Ed25519"])
    assert signed.headers() == {"alg": "Ed25519", "kid": device_keys.signing_kid, "typ": EVENT_TYP}
    assert json.loads(signed.payload) == CLAIMS
    # And the other way round is refused by the same library: a different device's key does not verify.
    other = keymod.generate("test-site/kiosk-t2")
    wrong = other.to_jwks(private=False)
    wrong["keys"][0]["kid"] = device_keys.signing_kid
    with pytest.raises(Exception):
        rfc_jws.deserialize_compact(decrypted.plaintext, KeySet.import_key_set(wrong), algorithms=["Ed25519"])


def test_jwcrypto_opens_it_too(device_keys, backend_keys):
    """The kiosk seals and opens with joserfc; jwcrypto, another implementation, agrees on both."""
    from jwcrypto import jwe as cwe
    from jwcrypto import jws as cws

    token = seal(CLAIMS, device_keys, backend_keys.public().encryption)
    outer = cwe.JWE()
    outer.deserialize(token, key=to_jwcrypto(backend_keys.encryption))
    signed = cws.JWS()
    signed.deserialize(outer.payload.decode())
    signed.verify(to_jwcrypto(device_keys.public().signing), alg="Ed25519")
    assert json.loads(signed.payload) == CLAIMS
    assert json.loads(signed.objects["protected"]) == {"alg": "Ed25519", "kid": device_keys.signing_kid, "typ": EVENT_TYP}
    # An envelope made by jwcrypto opens in the kiosk's open_sealed.
    inner = cws.JWS(json.dumps(CLAIMS).encode())
    inner.add_signature(to_jwcrypto(device_keys.signing), alg="Ed25519",
                        protected=json.dumps({"alg": "Ed25519", "kid": device_keys.signing_kid, "typ": EVENT_TYP}))
    made = cwe.JWE(inner.serialize(compact=True).encode(),
                   protected=json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "cty": "JWT",
                                         "kid": backend_keys.encryption_kid}))
    made.add_recipient(to_jwcrypto(backend_keys.public().encryption))
    opened = open_sealed(made.serialize(compact=True), backend_keys, keymod.KeyRing([device_keys]))
    assert opened.claims == CLAIMS and opened.signer == device_keys.owner


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _wrap(inner_text: str, backend_keys, header=None) -> str:
    """A well-made JWE to the back end around any content (anyone can make one: the key is public)."""
    from jwcrypto import jwe as cwe

    protected = header or {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "cty": "JWT", "kid": backend_keys.encryption_kid}
    made = cwe.JWE(inner_text.encode(), protected=json.dumps(protected))
    made.add_recipient(to_jwcrypto(backend_keys.public().encryption))
    return made.serialize(compact=True)


def test_signature_confusions_are_refused(device_keys, backend_keys):
    """alg none, HS256 keyed with the public key, and a key embedded in the header all fail as bad_signature."""
    import hashlib
    import hmac

    from jwcrypto import jws as cws

    ring = keymod.KeyRing([device_keys])
    payload = _b64(json.dumps(CLAIMS).encode())

    def reason(inner_text):
        with pytest.raises(EnvelopeError) as e:
            open_sealed(_wrap(inner_text, backend_keys), backend_keys, ring)
        return e.value.reason

    def header(**extra):
        return _b64(json.dumps({"kid": device_keys.signing_kid, "typ": EVENT_TYP, **extra}).encode())

    assert reason(f"{header(alg='none')}.{payload}.") == "bad_signature"
    public = to_jwcrypto(device_keys.public().signing).export_public().encode()
    signing_input = f"{header(alg='HS256')}.{payload}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    assert reason(f"{signing_input}.{_b64(mac)}") == "bad_signature"
    # Signed by an attacker who names the device's kid and carries their own key in the header.
    attacker = keymod.generate("test-site/kiosk-t1")
    forged = cws.JWS(json.dumps(CLAIMS).encode())
    forged.add_signature(to_jwcrypto(attacker.signing), alg="Ed25519", protected=json.dumps(
        {"alg": "Ed25519", "kid": device_keys.signing_kid, "typ": EVENT_TYP,
         "jwk": keymod.jwk_dict(attacker.signing, private=False)}))
    assert reason(forged.serialize(compact=True)) == "bad_signature"
    # The outer layer must be the one key agreement and cipher: anything else is refused before any key is used.
    genuine = seal(CLAIMS, device_keys, backend_keys.public().encryption)
    inner_of_genuine = "x.y.z"
    for alg, enc in (("ECDH-ES", "A256GCM"), ("ECDH-ES+A256KW", "A128CBC-HS256"), ("dir", "A256GCM")):
        parts = genuine.split(".")
        parts[0] = _b64(json.dumps({"alg": alg, "enc": enc, "kid": backend_keys.encryption_kid, "cty": "JWT"}).encode())
        with pytest.raises(EnvelopeError) as e:
            open_sealed(".".join(parts), backend_keys, ring)
        assert e.value.reason == "malformed", (alg, enc)
    # A header that is not JSON, or not an object.
    for first in ("%%%", _b64(b"[1, 2]"), _b64(b"not json")):
        with pytest.raises(EnvelopeError) as e:
            open_sealed(".".join([first] + genuine.split(".")[1:]), backend_keys, ring)
        assert e.value.reason == "malformed"
    assert reason(inner_of_genuine) == "malformed"


def test_refusals_name_their_reason(device_keys, backend_keys):
    ring = keymod.KeyRing([device_keys])
    token = seal(CLAIMS, device_keys, backend_keys.public().encryption)

    def reason(tok, recipient=backend_keys, senders=ring, typ=EVENT_TYP):
        with pytest.raises(EnvelopeError) as e:
            open_sealed(tok, recipient, senders, typ=typ)
        return e.value.reason

    assert reason("not.a.token") == "malformed"
    assert reason(b"\xff" * 10) == "malformed"
    # Encrypted to someone else.
    assert reason(seal(CLAIMS, device_keys, device_keys.public().encryption)) == "wrong_recipient"
    # A flipped bit in the ciphertext fails authentication.
    parts = token.split(".")
    ct = bytearray(base64.urlsafe_b64decode(parts[3] + "=="))
    ct[0] ^= 1
    parts[3] = base64.urlsafe_b64encode(bytes(ct)).rstrip(b"=").decode()
    assert reason(".".join(parts)) == "not_decryptable"
    # Signed by a device the back end does not know.
    stranger = keymod.generate("test-site/stranger")
    assert reason(seal(CLAIMS, stranger, backend_keys.public().encryption)) == "unknown_signer"
    # A stranger's key under a known kid: the signature does not verify.
    forged_signer = keymod.PartyKeys(device_keys.owner, _with_kid(stranger.signing, device_keys.signing_kid), stranger.encryption)
    assert reason(seal(CLAIMS, forged_signer, backend_keys.public().encryption)) == "bad_signature"
    # A message of another kind is not an event.
    assert reason(seal(CLAIMS, device_keys, backend_keys.public().encryption, typ="kiosk-gallery+jwt")) == "wrong_type"


def _with_kid(key, kid):
    data = keymod.jwk_dict(key, private=True)
    data["kid"] = kid
    return keymod.key_from_jwk(data)


def test_key_files_are_0600_and_refused_when_readable(tmp_path, device_keys):
    path = keymod.save_private(tmp_path / "device.jwks", device_keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = keymod.load_private(path)
    assert loaded.signing_kid == device_keys.signing_kid and loaded.has_private
    with pytest.raises(KeyFileError, match="exists"):
        keymod.save_private(path, device_keys)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="accessible by others"):
        keymod.load_private(path)
    # Loading a private file as public is held to the same rule.
    with pytest.raises(KeyFileError, match="accessible by others"):
        keymod.load_public(path)
    os.chmod(path, 0o600)
    pub = keymod.save_public(tmp_path / "device.pub.jwks", device_keys)
    assert not keymod.load_public_one(pub).has_private
    with pytest.raises(KeyFileError, match="not a private key file"):
        os.chmod(pub, 0o600)
        keymod.load_private(pub)
    with pytest.raises(KeyFileError, match="missing"):
        keymod.load_private(tmp_path / "nope.jwks")
    bad = tmp_path / "bad.jwks"
    bad.write_text("{not json")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a readable JWK Set"):
        keymod.load_private(bad)
    half = tmp_path / "half.jwks"
    half.write_text(json.dumps({"keys": device_keys.to_jwks(private=True)["keys"][:1]}))
    half.chmod(0o600)
    with pytest.raises(KeyFileError, match="needs one 'sig' and one 'enc'"):
        keymod.load_private(half)


def _config(state_dir, extra=""):
    return parse_config(
        f'[device]\nsite = "test-site"\ndevice_id = "kiosk-t1"\nstate_dir = "{state_dir}"\n'
        f"[mqtt]\nenabled = true\n{extra}"
    )


def test_daemon_keys_from_config_and_credentials_directory(tmp_path, monkeypatch, device_keys, backend_keys):
    state = tmp_path / "state"
    state.mkdir()
    cfg = _config(state)
    with pytest.raises(KeyFileError, match="missing"):
        keymod.load_device_keys(cfg)
    keymod.save_private(state / "device.jwks", device_keys)
    with pytest.raises(KeyFileError, match="back end's public key is missing"):
        keymod.load_device_keys(cfg)
    keymod.save_public(state / "backend.pub.jwks", backend_keys)
    dev, be = keymod.load_device_keys(cfg)
    assert dev.signing_kid == device_keys.signing_kid and not be.has_private

    # systemd's $CREDENTIALS_DIRECTORY wins for relative names.
    creds = tmp_path / "creds"
    creds.mkdir()
    other = keymod.generate("test-site/kiosk-t1")
    keymod.save_private(creds / "device.jwks", other)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert keymod.load_device_keys(cfg)[0].signing_kid == other.signing_kid

    # Keys of another device are refused.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    (state / "device.jwks").unlink()
    keymod.save_private(state / "device.jwks", keymod.generate("test-site/kiosk-t9"))
    with pytest.raises(ConfigError, match="holds the keys of 'test-site/kiosk-t9'"):  # exit 78: not restarted
        keymod.load_device_keys(cfg)


class _Run:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def admin(tmp_path, monkeypatch, capsys):
    """Run kiosk-admin in-process, in tmp_path; returns exit status and output."""
    from kiosk.admin import main

    monkeypatch.chdir(tmp_path)

    def run(*args):
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return _Run(code, out.out, out.err)

    return run


def test_kiosk_admin_keys(tmp_path, admin):
    r = admin("keys", "backend")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    assert [k["use"] for k in printed["keys"]] == ["sig", "enc"]
    assert all("d" not in k for k in printed["keys"])  # only the public half is printed
    assert stat.S_IMODE((tmp_path / "backend.jwks").stat().st_mode) == 0o600
    assert keymod.load_public_one(tmp_path / "backend.pub.jwks").encryption_kid == printed["keys"][1]["kid"]

    r = admin("keys", "device", "--site", "s1", "--device", "d1", "--out", "dev/device.jwks")
    assert r.returncode == 0, r.stderr
    dev = keymod.load_private(tmp_path / "dev/device.jwks")
    assert dev.owner == "s1/d1"
    assert keymod.load_public_one(tmp_path / "dev/s1.d1.pub.jwks").signing_kid == dev.signing_kid
    # No silent overwrite of a key.
    before = (tmp_path / "dev/device.jwks").read_bytes()
    r = admin("keys", "device", "--site", "s1", "--device", "d1", "--out", "dev/device.jwks")
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    assert (tmp_path / "dev/device.jwks").read_bytes() == before
    # show prints the public half, and refuses a private file readable by others.
    r = admin("keys", "show", "dev/device.jwks")
    assert r.returncode == 0 and all("d" not in k for k in json.loads(r.stdout)["keys"])
    os.chmod(tmp_path / "dev/device.jwks", 0o644)
    r = admin("keys", "show", "dev/device.jwks")
    assert r.returncode == 1 and "accessible by others" in r.stderr


def test_start_up_key_check(tmp_path, device_keys, backend_keys):
    state = tmp_path / "state"
    state.mkdir()
    off = parse_config(f'[device]\nsite = "test-site"\ndevice_id = "kiosk-t1"\nstate_dir = "{state}"\n')
    keymod.check_key_files(off)  # publishing off, no keys: fine
    path = keymod.save_private(state / "device.jwks", device_keys)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="accessible by others"):
        keymod.check_key_files(off)  # a readable key file is refused even with publishing off
    os.chmod(path, 0o600)
    keymod.check_key_files(off)
    on = _config(state)
    with pytest.raises(KeyFileError, match="back end's public key"):
        keymod.check_key_files(on)
    keymod.save_public(state / "backend.pub.jwks", backend_keys)
    keymod.check_key_files(on)
