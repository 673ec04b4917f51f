"""Offline tools beside the runtime pipeline: how well the kiosk decides, measured on labelled data.

Nothing on the door's frame path imports this package. :mod:`.pairs`
measures verification (genuine and impostor pairs of photos, TAR/FAR);
:mod:`.attacks` synthesises presentation-attack clips and cuts genuine ones
from real video; :mod:`.livesets` reads those and two real attack sets
(Replay-Attack, NUAA) at their real frame times, :mod:`.liveness` plays them
through the liveness check (ISO/IEC 30107-3 rates, ablation), and
:mod:`.appearance_data` extracts the appearance model's training features.
The ``kiosk-admin`` commands in :mod:`kiosk.admin` are thin wrappers around
them.
"""
