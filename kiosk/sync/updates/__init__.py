"""Gallery updates: the admin enrolls, changes and erases residents; every kiosk of the site follows.

:mod:`.format` (claims, sealing, frames, acks) is shared by both ends.
The admin's side is :mod:`.admin` (what to send each device, the ledger);
the device's side is :mod:`.device` (subscribe, acknowledge), which takes
each message through :mod:`.receive` (frames, parts, JWE, JWS, claims) and
:mod:`.apply` (one SQLite transaction, or nothing).
"""
