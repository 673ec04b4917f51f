"""Enrollment at the door: the admin's invitation, the door's proposal, the admin's review.

An invitation (:mod:`.invitation`) is a short-lived QR code signed by the
admin's key, for one resident and one site, used once. A door that reads one
takes a few descriptors of the face in front of it (:mod:`.session`) and
sends them, signed by the door and encrypted to the admin's key, as a
proposal (:mod:`.proposal`) through its outbox. Only the admin's approval,
published as the usual signed gallery update, changes what a door trusts.
"""
