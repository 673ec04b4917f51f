"""Check-in events: committed to the outbox, published signed and encrypted, read by the back end.

:mod:`.outbox` (SQLite, the source of truth) ─▶ :mod:`.publisher` (MQTT, at
least once) ─▶ :mod:`.consumer` (the reference back end: verify, decrypt,
de-duplicate). :mod:`.loadgen` feeds the real outbox and publisher with
made-up decisions for fault tests and benchmarks.
"""
