"""Everything that crosses the broker, in two subsystems that share one set of plumbing.

- :mod:`.events`: check-in events, from the device's outbox to the back end;
- :mod:`.updates`: gallery updates, from the admin to every device of a site.

Both use the JOSE keys (:mod:`.keys`), the signed-then-encrypted envelopes
(:mod:`.envelope`) and the MQTT clients and topics (:mod:`.mqtt`) here.
"""
