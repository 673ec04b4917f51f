"""The daemon: one application object that wires the stages and owns start and stop.

    capture thread ─▶ queue ─▶ match (this thread): motion gate, recogniser
        ─▶ outbox (committed first) ─▶ door panel, log, publisher

Stages are started in order and stopped in reverse. SIGTERM/SIGINT stop
cleanly (relay released, outbox on disk); SIGHUP reloads config and gallery.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .capture import open_source
from .capture.base import FrameSource
from .capture.reader import CaptureThread
from .cliopts import package_version
from .config import KioskConfig, config_from_args, load_config
from .errors import ConfigError, KioskError, NotProvisioned, ScreenUnavailable
from .feedback import Panels
from .logs import setup_logging
from .match.decide import Decision, Outcome
from .match.crops import EvidenceCrops
from .gallery.store import GalleryStore, open_store
from .match.models import MODEL_ID, load as load_model
from .match.pose import LandmarkCache
from .match.motion import MotionGate
from .match.recognizer import Recognizer
from .match.site import SiteEvidence
from .notify import KeepAlive, Notifier
from .sync.keys import check_key_files
from .sync.events.outbox import CheckIn, Outbox
from .sync.updates.device import GallerySync
from .sync.events.publisher import Publisher
from .location import LocationGuard, open_guard
from .qrtoken import QrCheckIn, open_qr_checkin

log = logging.getLogger(__name__)
#: How many of its latest decisions the daemon keeps in memory (a door runs for months).
RECENT_DECISIONS = 1000

# How often the match loop wakes when no frame comes, and reports STATUS=.
_POLL_S = 0.2
_STATUS_EVERY_S = 5.0
#: How often the door screen hears the door's state (link, queue, location).
_DOOR_STATE_EVERY_S = 1.0
#: After a provisioning code is taken, how long the rest of start-up may take with systemd's watchdog
#: fed (the unit's TimeoutStartSec=, which bounds a start that has not sent READY=1).
START_UNDER_WATCHDOG_S = 120.0


class Kiosk:
    """The running kiosk. Hand it what it cannot build itself (tests hand it fakes)."""

    def __init__(
        self,
        config: KioskConfig,
        *,
        source: FrameSource | None = None,
        panel=None,
        notifier: Notifier | None = None,
        on_decision: Callable[[Decision, CheckIn], None] | None = None,
        wall_clock=time.time,
    ):
        self.config = config
        self._source = source
        self._panel = panel
        self.notifier = notifier or Notifier()
        self.on_decision = on_decision
        self._wall = wall_clock
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._started: list[tuple[str, Callable[[], None]]] = []
        self.store: GalleryStore | None = None
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.gallery_sync: GallerySync | None = None
        self.recognizer: Recognizer | None = None
        self.capture: CaptureThread | None = None
        self.motion: MotionGate | None = None
        self.crops: EvidenceCrops | None = None  # with [outbox] evidence_crop
        self.panel = None
        self.screen = None  # the door screen, with [screen] enabled
        self.screen_error: str | None = None  # why the screen could not start (the door works without it)
        self.decisions: deque[Decision] = deque(maxlen=RECENT_DECISIONS)  # the latest, for tests and tools
        self._last_watchdog = 0.0
        self._last_status = 0.0
        self.location: LocationGuard | None = None
        self.qr: QrCheckIn | None = None
        self.enrollment = None  # enrollment at the door (kiosk.enrollment.session), with an admin key and MQTT
        self.templates = None  # door templates proposed after sure visits (kiosk.enrollment.door_templates), likewise
        self._last_location = 0.0
        self._last_door_state = 0.0
        self._camera_ok = True
        self.site = SiteEvidence()
        self._local: tuple[float, dict] | None = None  # (monotonic time, the door's own estimate), see local_estimate
        self._starting = KeepAlive(self.notifier, 0.0)  # fed only after a provisioning code, see _provisioned

    # -- life cycle --------------------------------------------------------

    def start(self) -> None:
        """Build and start every stage, in order; on failure stop what started."""
        cfg = self.config
        try:
            cfg = self.config = self._provisioned(cfg)
            self.notifier.status("starting: opening database and gallery")
            self.store = open_store(cfg)
            self._on_stop("database", self.store.db.close)
            check_key_files(cfg)
            # The outbox has its own connection: the publisher thread's
            # transactions never interleave with the match loop's.
            self.outbox = Outbox.open(cfg.database_path, site=cfg.device.site, device=cfg.device.device_id,
                                      settings=cfg.outbox, wall_clock=self._wall)
            self._on_stop("outbox", self.outbox.close)
            if cfg.mqtt.enabled:
                self.publisher = Publisher.from_config(cfg, self.outbox, status_provider=self._status_fields)
                self.publisher.start()
                self._on_stop("publisher", self.publisher.close)  # stops before the outbox closes
            self.qr = open_qr_checkin(cfg, self.store.db, wall_clock=self._wall)
            self.location = open_guard(cfg)
            if self.location is not None:
                self.location.provider.start()
                self._on_stop("location", self.location.close)
            gallery = self.store.load()
            self.crops = EvidenceCrops() if self.outbox.settings.evidence_crop else None
            self.notifier.status("starting: loading models")
            recent = self.outbox.last_checkins(self._wall() - cfg.match.repeat_interval_s)
            shapes = LandmarkCache(load_model("landmarks68"))  # one landmark fit per face, shared by the stages
            self.recognizer = Recognizer(cfg, gallery, liveness=_liveness(cfg, shapes), on_prompt=self._prompt,
                                         on_instruction=self._instruct, wall_clock=self._wall,
                                         recent_checkins=recent, shapes=shapes)
            self.enrollment = _enrollment(cfg, self.store.db, self.recognizer, self._wall)
            if self.enrollment is not None:
                from .enrollment.door_templates import open_proposer

                self.templates = open_proposer(cfg, wall_clock=self._wall, outbox=self.outbox)
            if self.publisher is not None:  # gallery updates come over the publisher's connection
                self.gallery_sync = GallerySync.from_config(cfg, self.recognizer, self.publisher, wall_clock=self._wall)
                if self.gallery_sync is not None:
                    self.gallery_sync.start()
                    self._on_stop("gallery sync", self.gallery_sync.close)
            if self.panel is None:  # else opened early, to wait for a provisioning code
                self._start_panel(cfg)
            sensor = getattr(self.panel, "motion_sensor", None)
            self.motion = MotionGate(cfg.motion, sensor=sensor)
            if self.capture is None:
                self._start_capture(cfg)
        except BaseException:
            self._starting.stop()
            self.stop()
            raise
        self._starting.stop()
        log.info(
            "kiosk %s/%s started: %d residents, source %s",
            cfg.device.site, cfg.device.device_id, len(gallery), self.capture.source.name,
        )
        self.notifier.ready(self._status_line())

    def _on_stop(self, name: str, fn: Callable[[], None]) -> None:
        self._started.append((name, fn))

    def _start_panel(self, cfg: KioskConfig) -> None:
        door = self._panel if self._panel is not None else _open_panel(cfg)
        self._on_stop("panel", door.close)
        parts = [door]
        if cfg.screen.enabled:
            from .screen.panel import DoorScreen

            try:
                self.screen = DoorScreen(cfg.screen, names=self._display_name).start()
            except ScreenUnavailable as e:
                # The relay, the lights and the buzzer still work: the door stays in service, and says so.
                self.screen_error = str(e)
                log.error("door screen unavailable, running without it: %s", e)
            else:
                self._on_stop("screen", self.screen.close)
                parts.append(self.screen)
        if cfg.voice.enabled:
            from .voice.player import VoicePanel

            voice = VoicePanel(cfg.voice)
            self._on_stop("voice", voice.close)
            parts.append(voice)
        self.panel = door if len(parts) == 1 else Panels(parts)

    def _display_name(self, resident_id: str) -> str | None:
        """The gallery's display name for the screen's "Welcome" (never the id)."""
        r = self.recognizer
        resident = r.gallery.residents.get(resident_id) if r is not None else None
        return resident.name if resident is not None else None

    def _see(self, frame, boxes=()) -> None:
        """The newest frame and its faces' boxes to a screen (in memory only)."""
        see = getattr(self.panel, "see", None)
        if see is not None:
            try:
                see(frame.image, boxes)
            except Exception:
                log.exception("door screen failed")

    def _door_state(self, **state) -> None:
        tell = getattr(self.panel, "door", None)
        if tell is not None:
            try:
                tell(**state)
            except Exception:
                log.exception("door screen failed")

    def _frames_shown(self, get):
        """``get`` (the capture's), each frame also shown on the screen (while waiting for a code)."""
        def get_frame(*args, **kw):
            frame = get(*args, **kw)
            if frame is not None:
                self._see(frame)
            return frame

        return get_frame

    def _start_capture(self, cfg: KioskConfig) -> None:
        source = self._source if self._source is not None else open_source(cfg.capture.source, cfg.capture)
        self.capture = CaptureThread(source, cfg.capture)
        self.capture.start()
        self._on_stop("capture", self.capture.stop)

    def _provisioned(self, cfg: KioskConfig) -> KioskConfig:
        """The config with the stored provisioning; unprovisioned, first wait for a code at the camera."""
        from .provisioning.startup import provisioned_config, wait_for_code

        cfg, store, bundle = provisioned_config(cfg)
        if store is None or bundle is not None:
            return cfg
        self._start_panel(cfg)
        self._start_capture(cfg)
        self._door_state(unprovisioned=True)
        bundle = wait_for_code(store, self._frames_shown(self.capture.get), stop=self._stop, notifier=self.notifier,
                               panel=self.panel)
        if bundle is None:
            raise NotProvisioned("no provisioning code was taken (stopped, or the frames ended)")
        self._door_state(unprovisioned=False)
        # READY=1 went out while waiting: systemd's watchdog runs from here on, through the rest of start().
        self._starting = KeepAlive(self.notifier, START_UNDER_WATCHDOG_S).start()
        cfg, _, _ = provisioned_config(cfg)
        return cfg

    def stop(self) -> None:
        """Stop every started stage in reverse order. Safe to call twice."""
        if self._started:
            self.notifier.stopping()
        while self._started:
            name, fn = self._started.pop()
            try:
                fn()
            except Exception:
                log.exception("error while stopping %s", name)

    def request_stop(self, *_):
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_reload(self, *_):
        self._reload.set()

    # -- the match loop ----------------------------------------------------

    def run(self) -> int:
        """Process frames until stopped or the source ends; 0 on a clean end."""
        threading.current_thread().name = "match"
        assert self.capture and self.recognizer
        status = 0
        last_t = 0.0  # the last frame's time
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            try:
                frame = self.capture.get(timeout=_POLL_S)
            except queue.Empty:
                self._tick(frame_flowing=False)
                continue
            except KioskError as e:
                log.error("frame source failed: %s", e)
                status = 1
                break
            if frame is None:  # a file or folder has run dry
                for d in self.recognizer.review(self.recognizer.finish(), last_t, final=True):
                    self._handle(d)
                log.info("end of source after %d frames", self.recognizer.stats.frames)
                break
            someone = self.motion.update(frame)
            enrolling = self._enroll(frame, someone)
            if enrolling:  # the enrollment has the frame: open visits only end
                decisions = self.recognizer.process(frame, faces=[])
                self.motion.hold(frame.timestamp)
            elif someone:
                decisions = self.recognizer.process(frame)
                if self.recognizer.tracker.tracks:
                    self.motion.hold(frame.timestamp)
                if self.qr is not None:  # a resident's QR credential, looked for every Nth frame
                    decisions += self.qr.offer(frame)
            else:  # nobody there: no detection, but open visits still end
                decisions = self.recognizer.process(frame, faces=[])
            if self.crops is not None:
                self.crops.see(frame.image, frame.timestamp, self.recognizer.tracker.tracks.values())
            decisions = self.recognizer.review(decisions, frame.timestamp)  # the QR second factor, where on
            boxes = [t.box for t in self.recognizer.tracker.tracks.values() if t.last_seen == frame.timestamp]
            self._see(frame, boxes + (self.enrollment.boxes(frame.timestamp) if enrolling else []))
            last_t = frame.timestamp
            for d in decisions:
                self._handle(d)
            if self.crops is not None:
                self.crops.forget(self.recognizer.tracker.tracks)
            self._tick(frame_flowing=True)
        self._qr_suppressed(final=True)
        return status

    def _enroll(self, frame, someone: bool) -> bool:
        """Hand the frame to the enrollment first; True if an enrollment at the door has it."""
        if self.enrollment is None:
            return False
        step = self.enrollment.step(frame, someone)
        for d in step.show:
            try:
                self.panel.show(d)
            except Exception:
                log.exception("door panel failed")
        for d, extra in step.commit:
            self._handle(d, extra)
        return step.owns

    def _prompt(self, track, live) -> None:
        """Liveness cannot tell yet: ask the resident to look at the camera (not a decision)."""
        log.info("track %d: asking to look at the camera (%s)", track.id, live.reason)
        try:
            self.panel.show(Decision(Outcome.LOOK_AT_CAMERA, track.id, reason=live.reason))
        except Exception:
            log.exception("door panel failed")

    def _instruct(self, track, reason: str) -> None:
        """Guided capture and the active check: tell the resident what to do now (not a decision).

        A quality gate's reason goes out as TOO_POOR, a head turn asked for as LOOK_AT_CAMERA, each with
        its reason: the door's prompts (kiosk.prompts.for_decision) turn the reason into the instruction.
        """
        outcome = Outcome.LOOK_AT_CAMERA if reason.startswith("turn_") else Outcome.TOO_POOR
        log.info("track %d: instruction %s", track.id, reason)
        try:
            self.panel.show(Decision(outcome, track.id, reason=reason))
        except Exception:
            log.exception("door panel failed")

    def _handle(self, d: Decision, extra: dict | None = None) -> CheckIn:
        where = {}
        if self.location is not None:
            self._check_location()
            where = self.location.claims()
            if d.outcome is Outcome.ACCEPTED and self.location.policy() == "refuse":
                d = replace(d, outcome=Outcome.REFUSED_LOCATION, reason=f"location_{self.location.state.value.lower()}")
        # Committed first: the door, the log and MQTT only follow a stored event.
        evidence = self.crops.take(d.track_id) if self.crops is not None and d.method == "face" else None
        now = self._wall()
        # The gallery size the point was read at (as many residents' worth as its templates are).
        point = self.recognizer.point
        site = self.site.claims(d, point, point.effective_residents or len(self.recognizer.gallery), now)
        checkin = self.outbox.commit(
            d, evidence=evidence, gallery_version=self.recognizer.gallery.version, model_id=MODEL_ID, **where, **site,
            **(extra or {}),
        )
        self.site.committed(d, checkin.event_id, now)
        self._propose_template(d, checkin.event_id)
        d = replace(d, descriptor=None)  # the face's descriptor goes no further than the proposal
        self.decisions.append(d)
        # Who it was stays in the check-in record (erasable), never in the journal (it is not).
        log.info("decision %s seq=%d event=%s", replace(d, resident_id=None).describe(), checkin.seq, checkin.event_id)
        # While someone enrolls, the visits that end meanwhile are recorded but not shown over the enrollment.
        quiet = (self.enrollment is not None and self.enrollment.active and d.method != "invitation"
                 and d.outcome is not Outcome.ACCEPTED)
        try:
            if not quiet:
                self.panel.show(d)
        except Exception:
            log.exception("door panel failed")
        if self.on_decision:
            self.on_decision(d, checkin)
        return checkin

    def _propose_template(self, d: Decision, visit: str) -> None:
        """A visit the door was sure of twice over proposes a door template (kiosk.enrollment.door_templates), sealed."""
        if self.templates is None:
            return
        try:
            proposal = self.templates.consider(d, visit, self.recognizer.gallery, self.recognizer.point)
            if proposal is not None:
                event, extra = proposal
                self.outbox.commit(event, model_id=MODEL_ID, **extra)
                self.templates.committed(event.resident_id)
        except Exception:  # a proposal is a bonus: it never costs the door its check-in
            log.exception("door template proposal failed")

    def _qr_suppressed(self, *, final: bool = False) -> None:
        """Forged QR codes held back by the rate limit: one event for them all, once a minute and at the end."""
        n = self.qr.suppressed(final=final) if self.qr is not None else 0
        if n:
            self.outbox.commit_event("qr_suppressed", "SUPPRESSED", reason="forged", suppressed=n)
            log.warning("%d forged QR codes at the camera not recorded one by one (more than %d a minute)", n,
                        self.qr.forged.per_minute)

    def _tick(self, frame_flowing: bool) -> None:
        self._qr_suppressed()
        now = time.monotonic()
        healthy = self.capture.healthy or self.capture.ended  # a file that ran dry is not a fault
        if healthy != self._camera_ok:
            self._camera_ok = healthy
            # The resident-facing "out of order" light while the camera is gone.
            try:
                if healthy:
                    log.info("camera delivering frames again")
                    self.panel.clear()
                else:
                    log.error("camera stopped delivering frames (%s)", self.capture.status().get("error") or "stalled")
                    self.panel.error()
            except Exception:
                log.exception("door panel failed")
            self.notifier.status(self._status_line())
        if frame_flowing and healthy:
            interval = self.notifier.watchdog_interval
            if interval and now - self._last_watchdog >= interval / 3:
                self.notifier.watchdog()
                self._last_watchdog = now
        if self.location is not None and now - self._last_location >= 1.0:
            self._last_location = now
            self._check_location()
        if now - self._last_door_state >= _DOOR_STATE_EVERY_S:
            self._last_door_state = now
            self._tell_door_state()
        if now - self._last_status >= _STATUS_EVERY_S:
            self._last_status = now
            self.notifier.status(self._status_line())

    def _tell_door_state(self) -> None:
        """The link, the queue and the location, for the screen (a door without MQTT has no link to tell)."""
        if getattr(self.panel, "door", None) is None:
            return
        linked = self.publisher is not None
        self._door_state(offline=linked and not self.publisher.connected,
                         queued=self.outbox.depth() if linked else 0,
                         location_lost=self.location is not None and self.location.policy() == "refuse")

    def _check_location(self) -> None:
        """A change of location state is an event of its own."""
        change = self.location.update()
        if change is not None:
            self.outbox.commit_event("location", change.new.value, reason=change.reason,
                                     location_previous=change.old.value, **self.location.claims())
            self.notifier.status(self._status_line())

    def location_status(self) -> dict | None:
        """The location part of the device status (for the status topic), or None without a guard."""
        return self.location.status() if self.location is not None else None

    def liveness_status(self) -> dict:
        """Which liveness cues run (``{"enabled": False}`` when the check is off)."""
        check = self.recognizer.liveness if self.recognizer else None
        return {"enabled": True, **check.status()} if check is not None else {"enabled": False}

    def _status_fields(self) -> dict:
        """Extra fields of the retained MQTT status (read on the publisher thread)."""
        r = self.recognizer
        return {
            "versions": {"gallery": r.gallery.version if r else None, "model": MODEL_ID, "software": package_version()},
            "camera": "ok" if self.capture and self.capture.healthy else "no_frames",
            "location": self.location_status(),
            "gallery": self.gallery_sync.status() if self.gallery_sync is not None
            else {"updates": "off", "version": r.gallery.version if r else None},
            "liveness": self.liveness_status(),
            "recognition": {**r.operating_status(), "site_estimate": self.local_estimate()} if r else None,
            "screen": self.screen_status(),
            "enrollment": self.enrollment.status(self.outbox) if self.enrollment is not None and self.outbox is not None
            else {"enabled": False},
            "door_templates": self.templates.status() if self.templates is not None
            else {"enabled": False},
        }

    def screen_status(self) -> str:
        """The door screen: "ok", "off" (not configured) or "unavailable" (it could not start)."""
        return "ok" if self.screen is not None else ("unavailable" if self.screen_error else "off")

    def local_estimate(self) -> dict | None:
        """This door's own estimate of its strangers against the calibration (from its outbox; recomputed at most
        once a minute: it is read on the publisher thread). None where nothing is calibrated."""
        from .siteestimate import DOOR_WINDOW_S, EVENT_TYPES, door_estimate, load_points

        now = time.monotonic()
        if self._local is not None and now - self._local[0] < 60.0:
            return self._local[1]
        try:
            events = self.outbox.recent(self._wall() - DOOR_WINDOW_S, EVENT_TYPES) if self.outbox else []
            value = door_estimate(events, load_points())
        except (OSError, ValueError, KeyError) as e:
            log.warning("site estimate: cannot compute this door's: %s", e)
            value = None
        self._local = (now, value)
        return value

    def _status_line(self) -> str:
        r, c = self.recognizer, self.capture
        camera = "ok" if c and c.healthy else "NO FRAMES"
        return (
            f"{len(r.gallery) if r else 0} residents; camera {camera}; frames {r.stats.frames if r else 0}; "
            f"decisions {sum(r.stats.decisions.values()) if r else 0}; outbox {self.outbox.depth() if self.outbox else 0} undelivered"
            + (f"; location {self.location.state.value}" if self.location is not None else "")
            + ("; SCREEN UNAVAILABLE" if self.screen_error else "")
        )

    def _reload_gallery(self) -> None:
        """The gallery read again from the database. Where updates come, on the gallery thread, so that a reload
        never lands between an update's swap and its ack; else here, on the frame loop between frames, where the
        old gallery can be overwritten at once (nothing is searching it)."""
        sync = self.gallery_sync
        if sync is not None and sync.alive:
            if not sync.reload():
                log.warning("gallery reload: the gallery thread did not answer in time; it reloads when it can")
            return
        old = self.recognizer.gallery
        self.recognizer.swap_gallery(self.store.load())
        if old is not self.recognizer.gallery:
            old.scrub()

    def reload(self) -> None:
        """Re-read the config file and the gallery; keep running on the old ones if they are bad."""
        self.notifier.reloading()
        path = self.config.source_path
        try:
            if path:
                new = load_config(path)
                new = new.model_copy(update={"device": self.config.device})  # identity and state stay
                new = _reapply_provisioning(new)
                self.recognizer.reconfigure(new)
                if self.templates is not None:  # its margin and interval; who it proposed for stays
                    self.templates.config = new
                elif self.enrollment is not None and new.door_templates.enabled:  # turned on
                    from .enrollment.door_templates import open_proposer

                    self.templates = open_proposer(new, wall_clock=self._wall, outbox=self.outbox)
                self.config = new
            self._reload_gallery()
            log.info("reloaded %s", path or "gallery")
        except ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
        self.notifier.ready(self._status_line())


def _reapply_provisioning(cfg: KioskConfig) -> KioskConfig:
    from .provisioning.startup import provisioned_config

    try:
        return provisioned_config(cfg)[0]
    except KioskError as e:  # a reload keeps the running config rather than stop on it
        raise ConfigError(f"provisioning: {e}") from e


def _enrollment(cfg: KioskConfig, db, recognizer, wall_clock):
    from .enrollment.session import open_enrollment

    return open_enrollment(cfg, db, recognizer, wall_clock=wall_clock)


def _liveness(cfg: KioskConfig, shapes=None):
    if not cfg.liveness.enabled:
        return None
    from .match.liveness import Liveness

    return Liveness(cfg.liveness, shape_predictor=shapes)


def _open_panel(cfg: KioskConfig):
    from .door import open_panel

    return open_panel(cfg.gpio)


# -- `kiosk run` -------------------------------------------------------------


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run the kiosk daemon",
        description="Run the kiosk: capture, recognise, decide, commit check-ins. Stops cleanly on SIGINT/SIGTERM, "
        "reloads config and gallery on SIGHUP, and exits 0 at the end of a file source.",
    )
    p.add_argument("--config", metavar="FILE", help="config file (default: built-in defaults)")
    p.add_argument("--source", metavar="SPEC", help="override capture.source (a camera, video file or folder)")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="override device.state_dir")
    p.add_argument("--print", dest="print_decisions", action="store_true", help="print each decision on stdout")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    cfg = config_from_args(args)
    setup_logging(cfg.logging.level, journald=cfg.logging.journald)
    on_decision = _printer if args.print_decisions else None
    kiosk = Kiosk(cfg, on_decision=on_decision)
    signal.signal(signal.SIGTERM, kiosk.request_stop)
    signal.signal(signal.SIGINT, kiosk.request_stop)
    signal.signal(signal.SIGHUP, kiosk.request_reload)
    try:
        kiosk.start()
    except NotProvisioned:
        if kiosk.stop_requested:  # stopped while waiting for a code: a clean stop
            return 0
        raise
    try:
        return kiosk.run()
    finally:
        kiosk.stop()


def _printer(d: Decision, checkin: CheckIn) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(checkin.claims["time"]))
    print(f"{stamp} seq={checkin.seq:<4} {d.describe()} event={checkin.event_id}", flush=True)
