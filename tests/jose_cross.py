"""The second JOSE library of the tests (jwcrypto), beside the kiosk's own (joserfc).

The kiosk makes and opens everything with joserfc; the tests make and open
the same messages with jwcrypto, an independent implementation, in both
directions. These turn the kiosk's keys into jwcrypto's and back.
"""

from __future__ import annotations

from jwcrypto import jwk

from kiosk.sync import keys as keymod


def to_jwcrypto(key: keymod.Key) -> jwk.JWK:
    """A kiosk key (joserfc) as a jwcrypto key, private if it is."""
    return jwk.JWK(**keymod.jwk_dict(key, private=key.is_private))


def from_jwcrypto(key: jwk.JWK) -> keymod.Key:
    """A jwcrypto key as a kiosk key (joserfc)."""
    import json

    return keymod.key_from_jwk(json.loads(key.export(private_key=key.has_private)))
