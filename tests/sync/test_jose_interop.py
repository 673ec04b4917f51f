"""The kiosk's JOSE (joserfc) against a second, independent library (jwcrypto), in both directions.

Key files, QR credentials, provisioning codes and resets, gallery updates,
their heads and acknowledgements: jwcrypto opens what the kiosk makes, and
the kiosk opens what jwcrypto makes. (Events: tests/test_envelope.py.) The
key files are the ones kiosks in the field hold, written by the jwcrypto
code the kiosk ran before: they load, keep their key ids, and are written
back byte for byte.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from fleet import make_fleet
from harness.gallery_kit import Admin, World, vectors
from jose_cross import from_jwcrypto, to_jwcrypto
from jwcrypto import jwe, jwk, jws

from kiosk.config import GallerySettings, QrCredentialSettings
from kiosk.db import open_database
from kiosk.errors import ProvisioningRefused
from kiosk.gallery.store import Resident
from kiosk.provisioning import bundle as bmod
from kiosk.provisioning.trust import RootKeys, load_root_private, save_root
from kiosk.qrtoken import QR_TYP, NonceCache, QrVerifier, issue_token
from kiosk.sync import keys as keymod
from kiosk.sync.updates.format import ACK_TYP, GALLERY_TYP, HEAD_TYP, ack_claims, seal_update, sign_ack, verify_ack
from kiosk.sync.updates.receive import UpdateReceiver

SITE, DOOR = "block-7", "door-1"


# -- what jwcrypto made and what it reads ---------------------------------------------


def jwcrypto_party(owner: str) -> tuple[jwk.JWK, jwk.JWK]:
    """A party's keys made as the kiosk made them with jwcrypto: kid ``owner/use/thumbprint``, use and alg."""

    def meta(key: jwk.JWK, use: str, alg: str) -> jwk.JWK:
        data = json.loads(key.export_private())
        data.update(kid=f"{owner}/{use}/{key.thumbprint()}", use=use, alg=alg)
        return jwk.JWK(**data)

    return (meta(jwk.JWK.generate(kty="OKP", crv="Ed25519"), "sig", "Ed25519"),
            meta(jwk.JWK.generate(kty="EC", crv="P-256"), "enc", "ECDH-ES+A256KW"))


def jwcrypto_file(path, keys: list[jwk.JWK], *, private: bool) -> bytes:
    """A JWK Set file as the jwcrypto code wrote it (0600 when private)."""
    data = [json.loads(k.export_private() if private else k.export_public()) for k in keys]
    text = (json.dumps({"keys": data}, indent=2) + "\n").encode()
    path.write_bytes(text)
    os.chmod(path, 0o600 if private else 0o644)
    return text


def jwcrypto_sign(claims: dict, key: jwk.JWK, typ: str) -> str:
    signed = jws.JWS(json.dumps(claims).encode())
    signed.add_signature(key, alg="Ed25519", protected=json.dumps({"alg": "Ed25519", "kid": key.get("kid"), "typ": typ}))
    return signed.serialize(compact=True)


def jwcrypto_verify(token: str, key: keymod.Key, typ: str) -> dict:
    signed = jws.JWS()
    signed.deserialize(token)
    signed.verify(to_jwcrypto(keymod.public_key(key)), alg="Ed25519")
    assert json.loads(signed.objects["protected"]) == {"alg": "Ed25519", "kid": key.kid, "typ": typ}
    return json.loads(signed.payload)


# -- key files --------------------------------------------------------------------------


def test_key_files_of_the_jwcrypto_kiosk_load_and_are_written_back_the_same(tmp_path):
    sig, enc = jwcrypto_party(f"{SITE}/{DOOR}")
    old_private = jwcrypto_file(tmp_path / "device.jwks", [sig, enc], private=True)
    old_public = jwcrypto_file(tmp_path / "device.pub.jwks", [sig, enc], private=False)
    party = keymod.load_private(tmp_path / "device.jwks")
    assert party.owner == f"{SITE}/{DOOR}" and party.has_private
    assert (party.signing_kid, party.encryption_kid) == (sig.get("kid"), enc.get("kid"))
    # Same thumbprints (RFC 7638) in both libraries: the key ids stay what they were.
    assert party.signing.thumbprint() == sig.thumbprint() and party.encryption.thumbprint() == enc.thumbprint()
    assert keymod.load_public_one(tmp_path / "device.pub.jwks").signing_kid == sig.get("kid")
    # Written back by the kiosk, byte for byte the files jwcrypto wrote.
    assert keymod.save_private(tmp_path / "again.jwks", party).read_bytes() == old_private
    assert keymod.save_public(tmp_path / "again.pub.jwks", party).read_bytes() == old_public
    # The fleet's root key too.
    root = jwcrypto_party("fleet")[0]
    jwcrypto_file(tmp_path / "root.jwks", [root], private=True)
    old_root_public = jwcrypto_file(tmp_path / "root.pub", [root], private=False)
    loaded = load_root_private(tmp_path / "root.jwks")
    assert RootKeys.load(tmp_path / "root.pub").kids == [root.get("kid")] == [loaded.kid]
    save_root(tmp_path / "root2.jwks", tmp_path / "root2.pub", loaded)
    assert (tmp_path / "root2.pub").read_bytes() == old_root_public


def test_key_files_the_kiosk_writes_load_in_jwcrypto(tmp_path):
    party = keymod.generate(f"{SITE}/{DOOR}")
    text = keymod.save_private(tmp_path / "device.jwks", party).read_text()
    sig, enc = (jwk.JWK(**k) for k in json.loads(text)["keys"])
    # Byte for byte what the jwcrypto kiosk wrote for the same keys.
    assert text.encode() == jwcrypto_file(tmp_path / "old.jwks", [sig, enc], private=True)
    pub = keymod.save_public(tmp_path / "device.pub.jwks", party).read_bytes()
    assert pub == jwcrypto_file(tmp_path / "old.pub.jwks", [sig, enc], private=False)
    assert sig.has_private and enc.has_private
    assert sig.get("kid") == f"{SITE}/{DOOR}/sig/{sig.thumbprint()}" == party.signing_kid
    assert enc.get("kid") == f"{SITE}/{DOOR}/enc/{enc.thumbprint()}" == party.encryption_kid
    assert (sig.get("use"), sig.get("alg"), enc.get("use"), enc.get("alg")) == ("sig", "Ed25519", "enc", "ECDH-ES+A256KW")
    # The same keys once more through jwcrypto and back: nothing changes.
    assert keymod.jwk_dict(from_jwcrypto(sig), private=True) == keymod.jwk_dict(party.signing, private=True)
    # And the compact form a provisioning code carries rebuilds the same key ids.
    again = keymod.party_from_compact(party.owner, keymod.compact_public(party))
    assert (again.signing_kid, again.encryption_kid) == (party.signing_kid, party.encryption_kid)


# -- QR credentials ---------------------------------------------------------------------


@pytest.fixture
def db(tmp_path):
    d = open_database(tmp_path / "kiosk.db")
    yield d
    d.close()


def test_qr_credentials_both_ways(db):
    backend = keymod.generate(keymod.BACKEND)
    claims = jwcrypto_verify(issue_token(backend, "r-0815", SITE, DOOR), backend.signing, QR_TYP)
    assert (claims["sub"], claims["aud"]) == ("r-0815", f"{SITE}/{DOOR}")
    now = int(time.time())
    made = jwcrypto_sign({"sub": "r-0815", "site": SITE, "aud": f"{SITE}/{DOOR}", "iat": now, "exp": now + 60,
                          "nonce": "n" * 22}, to_jwcrypto(backend.signing), QR_TYP)
    verifier = QrVerifier(backend.public(), SITE, QrCredentialSettings(), NonceCache(db), device=DOOR)
    assert verifier.verify(made).signed_by == backend.signing_kid


# -- provisioning codes and resets --------------------------------------------------------


def test_provisioning_codes_and_resets_both_ways(tmp_path):
    fleet = make_fleet(tmp_path / "fleet")
    root, roots = fleet.root, RootKeys.load(fleet.root_public)
    bundle = fleet.bundle()
    assert jwcrypto_verify(bmod.sign_bundle(bundle, root), root, bmod.PROVISION_TYP) == bundle.claims()
    made = jwcrypto_sign(bundle.claims(), to_jwcrypto(root), bmod.PROVISION_TYP)
    read = bmod.read_bundle(made, roots)
    assert read.claims() == bundle.claims() and read.signed_by == root.kid
    reset = jwcrypto_verify(bmod.sign_reset(SITE, DOOR, root), root, bmod.RESET_TYP)
    assert (reset["site"], reset["dev"]) == (SITE, DOOR)
    assert bmod.read_reset(jwcrypto_sign(reset, to_jwcrypto(root), bmod.RESET_TYP), roots).device_id == DOOR
    # A code signed by another root key is not this fleet's, in either library.
    other = jwcrypto_party("fleet")[0]
    with pytest.raises(ProvisioningRefused) as e:
        bmod.read_bundle(jwcrypto_sign(bundle.claims(), other, bmod.PROVISION_TYP), roots)
    assert e.value.reason == "unknown_signer"


# -- gallery updates, heads and acknowledgements ---------------------------------------------


def update_claims(admin: Admin) -> dict:
    world = World()
    world.put(Resident("r-1", "A Resident"), vectors(np.random.default_rng(3)))
    return admin.claims(world, site=SITE, version=1, base="snapshot")


@pytest.mark.parametrize("recipients", [1, 2])
def test_gallery_updates_the_kiosk_seals_open_in_jwcrypto(recipients):
    admin = Admin()
    devices = [keymod.generate(f"{SITE}/door-{i}") for i in range(recipients)]
    claims = update_claims(admin)
    sealed = seal_update(claims, admin.keys, [keymod.public_key(d.encryption) for d in devices])
    assert ("recipients" in json.loads(sealed)) == (recipients > 1)  # one recipient: the flattened form
    for device in devices:
        token = jwe.JWE()
        token.deserialize(sealed, key=to_jwcrypto(device.encryption))
        assert json.loads(token.objects["protected"]) == {"enc": "A256GCM", "cty": "JWT"}
        assert jwcrypto_verify(token.payload.decode(), admin.keys.signing, GALLERY_TYP) == claims


@pytest.mark.parametrize("recipients", [1, 2])
def test_gallery_updates_jwcrypto_seals_open_on_the_device(recipients):
    """As the kiosk-admin of before sealed them (jwcrypto writes headers with spaces)."""
    admin = Admin()
    devices = [keymod.generate(f"{SITE}/door-{i}") for i in range(recipients)]
    claims = update_claims(admin)
    inner = jwcrypto_sign(claims, to_jwcrypto(admin.keys.signing), GALLERY_TYP)
    sealed = jwe.JWE(inner.encode(), protected=json.dumps({"enc": "A256GCM", "cty": "JWT"}))
    for d in devices:
        sealed.add_recipient(to_jwcrypto(keymod.public_key(d.encryption)),
                             header=json.dumps({"alg": "ECDH-ES+A256KW", "kid": d.encryption_kid}))
    text = sealed.serialize(compact=False)
    for device in devices:
        receiver = UpdateReceiver(device, keymod.KeyRing([admin.keys]), GallerySettings())
        update, kid = receiver.open(text)
        assert kid == admin.keys.signing_kid and update.update_id == claims["update_id"]


def test_heads_and_acks_both_ways():
    admin, device = Admin(), keymod.generate(f"{SITE}/{DOOR}")
    claims = update_claims(admin)
    frames = admin.frames(claims, device)
    head = jwcrypto_verify(json.loads(frames[0])["head"], admin.keys.signing, HEAD_TYP)
    assert head["update_id"] == claims["update_id"]
    # A head jwcrypto signs announces the update on the device.
    receiver = UpdateReceiver(device, keymod.KeyRing([admin.keys]), GallerySettings())
    made = jwcrypto_sign(head, to_jwcrypto(admin.keys.signing), HEAD_TYP)
    assert receiver.offer(json.dumps({"v": 2, "head": made})) is None and receiver.pending == 1
    assert receiver.offer(frames[1]).signer_kid == admin.keys.signing_kid
    # Acknowledgements: the device signs, the admin's side verifies.
    ack = ack_claims(site=SITE, device=DOOR, result="holding", version=1, digest=claims["digest"], now=time.time())
    assert jwcrypto_verify(sign_ack(ack, device), device.signing, ACK_TYP) == ack
    ring = keymod.KeyRing([device])
    assert verify_ack(jwcrypto_sign(ack, to_jwcrypto(device.signing), ACK_TYP), ring) == ack
