"""Offline tools beside the runtime pipeline: how well the kiosk decides, measured on labelled data.

Nothing on the door's frame path imports this package. :mod:`.pairs`
measures verification (genuine and impostor pairs of photos, TAR/FAR);
:mod:`.attacks` synthesises presentation-attack clips and cuts genuine ones
from real video. The ``kiosk-admin`` commands in :mod:`kiosk.admin` are thin
wrappers around them.
"""
