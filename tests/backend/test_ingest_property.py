"""Property tests: arbitrary headers and claims through the real broker into both stores.

Hypothesis makes the messages; a real ``kiosk-ingest`` (one per store, kept
across examples) takes them from a real Mosquitto. After each example:
the message is accounted for (stored by its event id, or refused with a
printable reason under its SHA-256), door-2's honest event sent after it is
stored, and the service still runs and says it is healthy.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.ingest_kit import wait_for
from ingest_rig import IngestRig

# Text with what broke the back end before: NUL, control characters, lone surrogates.
_nasty = st.sampled_from(["\x00", "\ud800", "\udfff", "\x1b[31m", "\u202e", "=cmd|", "'; DROP TABLE events;--"])
TEXT = st.builds(lambda a, b, c: a + b + c, st.text(max_size=8), st.one_of(st.just(""), _nasty), st.text(max_size=8))
NUMBERS = st.one_of(st.integers(min_value=-(2**80), max_value=2**80), st.sampled_from([10**400, -(10**400)]),
                    st.floats(allow_nan=False, allow_infinity=False))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
CLAIM_NAMES = ["event_id", "seq", "site", "device", "type", "time", "outcome", "resident_id", "distance", "margin",
               "frames", "reason", "liveness", "method", "gallery_version", "model_id", "location_state",
               "location_flagged", "v", "evidence_jpeg"]
HEADER_NAMES = ["alg", "enc", "kid", "cty", "typ", "zip", "epk", "crit"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def rig(request, tmp_path_factory, broker_pki):
    from harness.broker import MOSQUITTO, Broker
    import os

    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed (scripts/bootstrap installs it)")
    root = tmp_path_factory.mktemp(f"property-{request.param}")
    broker = Broker(root / "mosquitto", broker_pki)
    broker.start()
    url = f"sqlite:///{root / 'events.db'}" if request.param == "sqlite" else \
        request.getfixturevalue("postgres_server").create_database()
    r = IngestRig(broker, root, url).start()
    yield r
    r.close()
    broker.kill()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def account_for(rig: IngestRig, sha: str, event_id: object) -> None:
    """The message is stored or refused (printably), and the service still serves door-2."""
    honest = rig.genuine("door-2")
    assert rig.wait_stored(honest), rig.ingest.log_text()[-3000:]
    stored = (lambda: event_id in rig.stored_ids()) if isinstance(event_id, str) else (lambda: False)
    assert wait_for(lambda: rig.refusals(sha) or stored(), 20), rig.ingest.log_text()[-3000:]
    for row in rig.refusals(sha):
        for key in ("topic", "reason", "detail"):
            row[key].encode("utf-8")
            assert not any(ord(c) < 0x20 for c in row[key]), row
    assert rig.ingest.running()


@pytest.mark.e2e
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(header=st.dictionaries(st.one_of(st.sampled_from(HEADER_NAMES), TEXT), JSON, max_size=5),
       keep_algorithms=st.booleans(), rest=st.lists(st.binary(max_size=40), min_size=4, max_size=4))
def test_any_header_from_a_door_certificate_is_accounted_for(rig, header, keep_algorithms, rest):
    if keep_algorithms:  # reach past the header checks into decryption
        header.update({"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": rig.fleet.backend.encryption_kid})
    token = ".".join([b64(json.dumps(header).encode()), *(b64(r) for r in rest)])
    sha = rig.publish("door-1", token)
    account_for(rig, sha, None)
    assert [r["reason"] for r in rig.refusals(sha)] in (["malformed"], ["not_decryptable"], ["wrong_recipient"])


@pytest.mark.e2e
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(changes=st.dictionaries(st.one_of(st.sampled_from(CLAIM_NAMES), TEXT), JSON, max_size=4),
       dropped=st.lists(st.sampled_from(CLAIM_NAMES), max_size=2))
def test_any_claims_signed_with_a_stolen_door_key_are_accounted_for(rig, changes, dropped):
    claims = rig.claims("door-1")
    claims.update(changes)
    for name in dropped:
        claims.pop(name, None)
    sha = rig.publish("door-1", rig.sealed("door-1", claims))
    account_for(rig, sha, claims.get("event_id"))
