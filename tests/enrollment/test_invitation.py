"""The enrollment invitation: signed by the admin, for one site, good once, never a check-in credential
(and a credential never an invitation)."""

from __future__ import annotations

import time

import pytest

from kiosk.config import EnrollmentSettings, QrCredentialSettings
from kiosk.db import open_database
from kiosk.enrollment.invitation import INVITE_TYP, InvitationVerifier, issue_invitation
from kiosk.errors import TokenRefused
from kiosk.qrtoken import QR_TYP, NonceCache, QrVerifier, issue_token
from kiosk.sync import keys as keymod
from kiosk.sync.envelope import sign_compact

SITE = "block-7"
RESIDENT = "r-0815"


@pytest.fixture(scope="module")
def admin():
    return keymod.generate("admin")


@pytest.fixture
def db(tmp_path):
    d = open_database(tmp_path / "kiosk.db")
    yield d
    d.close()


def verifier(admin, db, site=SITE, **settings) -> InvitationVerifier:
    return InvitationVerifier(admin.public(), site, EnrollmentSettings(**settings), NonceCache(db))


def refused(v, token) -> str:
    with pytest.raises(TokenRefused) as e:
        v.verify(token)
    return e.value.reason


def test_a_good_invitation_is_read_and_then_used_once(admin, db):
    v = verifier(admin, db)
    token = issue_invitation(admin, RESIDENT, SITE, name="Ada")
    inv = v.verify(token)
    assert (inv.resident_id, inv.name, inv.site, inv.token) == (RESIDENT, "Ada", SITE, token)
    assert v.verify(token) == inv, "read, not used up: a failed try leaves it good"
    assert v.use(inv) and not v.use(inv)
    assert refused(v, token) == "replayed"
    assert refused(verifier(admin, db), token) == "replayed", "remembered in the kiosk database"


def test_an_invitations_id_is_always_a_command_line_argument(admin):
    """The id is what `kiosk-admin gallery review --approve ID` takes: one beginning with "-" would be read as an
    option (it failed CI once, a base64url nonce in 64), so ids are hex."""
    from kiosk.admin import build_parser
    from kiosk.enrollment.invitation import read_invitation

    for _ in range(200):
        nonce = read_invitation(issue_invitation(admin, RESIDENT, SITE), admin.public()).nonce
        assert len(nonce) == 32 and all(c in "0123456789abcdef" for c in nonce), nonce
    args = build_parser().parse_args(["gallery", "review", "--key", "k", "--store", "s", "--devices", "d",
                                      "--approve", nonce])
    assert args.approve == nonce


def test_expired_other_site_future_and_too_long_are_refused(admin, db):
    v = verifier(admin, db)
    now = time.time()
    assert refused(v, issue_invitation(admin, RESIDENT, SITE, lifetime_s=60, now=now - 3600)) == "expired"
    assert refused(v, issue_invitation(admin, RESIDENT, "other-site")) == "wrong_site"
    assert refused(v, issue_invitation(admin, RESIDENT, SITE, now=now + 3600)) == "not_yet_valid"
    assert refused(v, issue_invitation(admin, RESIDENT, SITE, lifetime_s=3 * 86400)) == "too_long"


def test_forged_invitations_are_refused(admin, db):
    v = verifier(admin, db)
    stranger = keymod.generate("admin")  # an admin key of someone else's
    assert refused(v, issue_invitation(stranger, RESIDENT, SITE)) == "forged"
    backend = keymod.generate("backend")  # the back end's key, which signs credentials, may not invite
    claims = {"sub": RESIDENT, "site": SITE, "purpose": "enroll", "iat": int(time.time()),
              "exp": int(time.time()) + 600, "nonce": "n" * 22}
    assert refused(v, sign_compact(claims, backend.signing, typ=INVITE_TYP)) == "forged"
    token = issue_invitation(admin, RESIDENT, SITE)
    head, body, sig = token.split(".")
    assert refused(v, f"{head}.{body}.{sig[:-4]}AAAA") == "forged"
    assert refused(v, sign_compact({**claims, "purpose": "checkin"}, admin.signing, typ=INVITE_TYP)) == "bad_claims"


def test_an_invitation_is_no_credential_and_a_credential_no_invitation(admin, db, backend_keys):
    invitation = issue_invitation(admin, RESIDENT, SITE)
    credential = issue_token(backend_keys, RESIDENT, SITE, "door-1")
    qr = QrVerifier(backend_keys.public(), SITE, QrCredentialSettings(), NonceCache(db), device="door-1")
    assert refused(qr, invitation) == "not_ours"
    assert refused(verifier(admin, db), credential) == "not_ours"
    # Even with the right signer and the other's typ: the claims of one are not the other's.
    as_credential = sign_compact({"sub": RESIDENT, "site": SITE, "aud": f"{SITE}/door-1", "iat": int(time.time()),
                                  "exp": int(time.time()) + 60, "nonce": "n" * 22}, admin.signing, typ=INVITE_TYP)
    assert refused(verifier(admin, db), as_credential) == "bad_claims"
    assert refused(qr, sign_compact({"sub": RESIDENT}, admin.signing, typ=QR_TYP)) == "forged"


def test_only_the_admins_private_key_issues(admin):
    with pytest.raises(ValueError):
        issue_invitation(admin.public(), RESIDENT, SITE)
    with pytest.raises(ValueError):
        issue_invitation(keymod.generate("backend"), RESIDENT, SITE)
    with pytest.raises(ValueError):
        issue_invitation(admin, "bad id!", SITE)


REASONS = {"not_ours", "forged", "bad_claims", "too_long", "not_yet_valid", "expired", "wrong_site", "replayed"}


def test_random_and_mutated_codes_are_refused_with_a_reason(admin, tmp_path):
    """What a camera reads is outside input: random bytes, and a genuine invitation mutated, are refused
    with a known reason (or are the invitation), never another exception, and use up no nonce."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    db = open_database(tmp_path / "fuzz.db")
    v = verifier(admin, db)
    token = issue_invitation(admin, RESIDENT, SITE)
    claims = {"sub": RESIDENT, "site": SITE, "purpose": "enroll", "iat": int(time.time()),
              "exp": int(time.time()) + 600, "nonce": "n" * 22}

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(
        st.binary(max_size=2000),
        st.tuples(st.integers(0, len(token) - 1), st.text(max_size=4)).map(
            lambda m: (token[:m[0]] + m[1] + token[m[0] + 1:]).encode("utf-8", "surrogatepass")),
        st.dictionaries(st.sampled_from(sorted(claims) + ["name", "aud"]),
                        st.one_of(st.none(), st.integers(), st.text(max_size=70), st.lists(st.integers()))).map(
            lambda c: sign_compact({**claims, **c}, admin.signing, typ=INVITE_TYP).encode()),
    ))
    def check(code):
        try:
            inv = v.verify(code)
        except TokenRefused as e:
            assert e.reason in REASONS, e.reason
        else:
            assert inv.site == SITE and inv.expires_at - inv.issued_at <= v.settings.max_lifetime_s
        assert len(NonceCache(db)) == 0

    try:
        check()
    finally:
        db.close()
