"""Check-in events: committed to the outbox, published signed and encrypted.

:mod:`.outbox` (SQLite, the source of truth) ─▶ :mod:`.publisher` (MQTT, at
least once, over :mod:`kiosk.sync.link`) ─▶ the back end's
:mod:`kiosk.backend.consumer` (verify, decrypt, de-duplicate). :mod:`.format`
is the claims' schema, written here and read there. :mod:`.loadgen` feeds the
real outbox and publisher with made-up decisions for fault tests and benchmarks.
"""
