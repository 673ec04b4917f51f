"""A synthetic event producer: the real outbox and publisher without a camera.

``python -m kiosk.sync.events.loadgen --config FILE`` commits made-up decisions
(check-ins of residents r-1 … r-5 and unknown visitors) into the outbox
named by the config and publishes them as the daemon does. It prints
``committed SEQ EVENT_ID`` after each commit returns, so a test that kills
it knows what must survive. Used by the SIGKILL fault test and for trying a
broker set-up by hand; it is not part of the daemon.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from ...config import load_config
from ...db import open_database
from ...logs import setup_logging
from ...match.decide import Decision, Outcome
from .outbox import Outbox
from .publisher import Publisher


def _decision(i: int) -> Decision:
    if i % 4 == 3:
        return Decision(Outcome.UNKNOWN, track_id=i, distance=0.61, margin=0.02, frames=5)
    return Decision(Outcome.ACCEPTED, track_id=i, resident_id=f"r-{i % 5 + 1}", distance=0.31, margin=0.12, frames=3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kiosk.sync.events.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="kiosk config file ([device], [mqtt], [keys], [outbox])")
    p.add_argument("--events", type=int, default=-1, help="events to commit (default: until stopped; 0: none)")
    p.add_argument("--rate", type=float, default=50.0, help="events per second (default 50)")
    p.add_argument("--drain", action="store_true", help="after committing, wait until all are delivered, then exit")
    p.add_argument("--timeout", type=float, default=60.0, help="give up draining after this many seconds")
    args = p.parse_args(argv)

    cfg = load_config(args.config)
    setup_logging(cfg.logging.level, journald=False)
    db = open_database(cfg.database_path)
    outbox = Outbox(db, site=cfg.device.site, device=cfg.device.device_id, settings=cfg.outbox)
    publisher = Publisher.from_config(cfg, outbox) if cfg.mqtt.enabled else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if publisher:
        publisher.start()
    status = 0
    try:
        i = 0
        next_at = time.monotonic()
        while not stop.is_set() and (args.events < 0 or i < args.events):
            ev = outbox.commit(_decision(i), gallery_version=1, model_id="loadgen")
            print(f"committed {ev.seq} {ev.event_id}", flush=True)
            i += 1
            next_at += 1.0 / args.rate
            stop.wait(max(0.0, next_at - time.monotonic()))
        if args.drain and not stop.is_set():
            drained = publisher.wait_drained(args.timeout) if publisher else False
            print(f"drained {drained} depth {outbox.depth()}", flush=True)
            status = 0 if drained else 1
    finally:
        if publisher:
            publisher.close()
        db.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
