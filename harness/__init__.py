"""Harnesses that the tests and the scripts share: real servers and simulated doors.

- :mod:`.broker`: a real Mosquitto with the docs' TLS config and ACL, its CA and client certificates;
- :mod:`.postgres`: a throw-away PostgreSQL cluster on a loopback port;
- :mod:`.ingest_kit`: a fleet of simulated doors (the kiosk's own outbox and publisher) and ``kiosk-ingest``;
- :mod:`.gallery_kit`: an admin and devices exchanging gallery updates;
- :mod:`.docs`: the README's and docs' code blocks, run verbatim;
- :mod:`.polling`: waiting for a condition.

Beside the runtime, not in it: the wheel ships ``kiosk`` only, and nothing in
``kiosk`` imports this. ``tests/`` and ``scripts/`` (bench-ingest,
bench-outbox, bench-gallery, arm64-boot) import it from the checkout.
"""
