"""The residents the console manages: the admin's enrollment database, as ``kiosk-admin enroll`` fills it.

Photos arrive as uploads and are described in memory (decoded, checked by the
quality gates, turned into templates by :class:`~kiosk.match.enroll.Enroller`);
the bytes are never written anywhere, only each photo's SHA-256 is kept (so
the same photo is not enrolled twice). The enrolment needs the device stack
(dlib, OpenCV): it is imported at the first enrolment, not at start.

One lock guards the database: waitress serves pages on several threads, and
the publisher (:mod:`.publishing`) reads the same file.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime

from ..config import KioskConfig
from ..errors import ConfigError, EnrollmentRefused
from ..gallery.erasure import erase_resident, reclaim
from ..gallery.store import GalleryStore, Resident, check_name, open_store

log = logging.getLogger(__name__)

RESIDENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class Enrolment:
    """What an enrolment did: templates added, and each refused photo with the quality gate's reason."""

    added: int = 0
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (file name, reason, message)


@dataclass(frozen=True)
class ResidentRow:
    id: str
    name: str
    valid_from: float | None
    valid_until: float | None
    templates: int

    def validity(self) -> str:
        def day(t):
            return datetime.fromtimestamp(t).strftime("%Y-%m-%d") if t is not None else "…"

        return "always" if self.valid_from is None and self.valid_until is None else \
            f"{day(self.valid_from)} to {day(self.valid_until)}"


class Residents:
    """List, search, enroll, change and erase residents in the admin's enrollment database."""

    def __init__(self, config: KioskConfig, *, max_templates: int | None = None):
        self.config = config
        self.lock = threading.RLock()
        self.gallery: GalleryStore = open_store(config)
        self._enroller = None
        self._enrolling = threading.Lock()  # one enrolment at a time: dlib's networks are not for two threads
        self._max_templates = max_templates

    def close(self) -> None:
        with self.lock:
            self.gallery.db.close()

    # -- reading ------------------------------------------------------------------------

    def count(self) -> int:
        with self.lock:
            return self.gallery.db.execute("SELECT count(*) FROM residents").fetchone()[0]

    def search(self, text: str = "", *, offset: int = 0, limit: int = 50) -> tuple[list[ResidentRow], int]:
        """Residents whose id or name holds ``text`` (case-insensitive), by name; (one page, how many in all)."""
        like = f"%{text.strip().lower()}%"
        where = "WHERE lower(r.id) LIKE ? OR lower(r.name) LIKE ?"
        with self.lock:
            total = self.gallery.db.execute(f"SELECT count(*) FROM residents r {where}", [like, like]).fetchone()[0]
            rows = self.gallery.db.execute(
                "SELECT r.id, r.name, r.valid_from, r.valid_until,"
                " (SELECT count(*) FROM templates t WHERE t.resident_id = r.id)"
                f" FROM residents r {where} ORDER BY lower(r.name), r.id LIMIT ? OFFSET ?",
                [like, like, int(limit), int(offset)]).fetchall()
        return [ResidentRow(*r) for r in rows], total

    def get(self, resident_id: str) -> ResidentRow | None:
        with self.lock:
            row = self.gallery.db.execute(
                "SELECT r.id, r.name, r.valid_from, r.valid_until,"
                " (SELECT count(*) FROM templates t WHERE t.resident_id = r.id) FROM residents r WHERE r.id = ?",
                [resident_id]).fetchone()
        return ResidentRow(*row) if row else None

    def names(self, ids) -> dict[str, str]:
        ids = list(ids)
        out: dict[str, str] = {}
        with self.lock:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                out.update(self.gallery.db.execute(
                    f"SELECT id, name FROM residents WHERE id IN ({','.join('?' * len(part))})", part).fetchall())
        return out

    # -- changing -----------------------------------------------------------------------

    def _enroller_once(self):
        if self._enroller is None:
            from ..match.enroll import Enroller  # dlib and OpenCV: the device stack

            self._enroller = Enroller(self.config.detect)
        return self._enroller

    def enroll(self, resident_id: str, name: str, photos: list[tuple[str, bytes]],
               valid_from: float | None = None, valid_until: float | None = None) -> Enrolment:
        """Enroll (or add photos to) one resident from uploaded photos, described in memory."""
        from ..match.enroll import MAX_TEMPLATES, select_diverse

        if not RESIDENT_ID.match(resident_id):
            raise ConfigError("a resident id is 1-64 letters, digits, '.', '_' or '-'")
        check_name(name)  # before the photos are described, not after
        out, templates = Enrolment(), []
        with self._enrolling:
            enroller = self._enroller_once()
            self._describe(enroller, photos, out, templates)
        kept = select_diverse(templates, self._max_templates or MAX_TEMPLATES)
        if kept:
            with self.lock:
                out.added = self.gallery.enroll(Resident(resident_id, name, valid_from, valid_until),
                                                [(t.vector, t.source_sha256) for t in kept])
        log.info("enrolment: %d template(s) added, %d photo(s) refused", out.added, len(out.refused))
        return out

    @staticmethod
    def _describe(enroller, photos, out: Enrolment, templates: list) -> None:
        """Each photo decoded in memory, checked by the quality gates, turned into a template."""
        import cv2
        import numpy as np

        for filename, data in photos:
            label = filename or "photo"
            try:
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
                if img is None:
                    raise EnrollmentRefused("unreadable", f"{label}: not a photo that can be read")
                templates.append(enroller.from_image(img, hashlib.sha256(data).hexdigest(), label))
            except EnrollmentRefused as e:
                out.refused.append((label, e.reason, str(e)))
            finally:
                data = img = None  # noqa: F841 (nothing of the photo outlives this loop)

    def update(self, resident_id: str, name: str, valid_from: float | None, valid_until: float | None) -> Resident:
        check_name(name)
        if valid_from is not None and valid_until is not None and valid_until <= valid_from:
            raise ConfigError("'valid until' must be after 'valid from'")
        with self.lock:
            current = self.gallery.residents().get(resident_id)
            if current is None:
                raise ConfigError("no such resident")
            r = Resident(resident_id, name, valid_from, valid_until)
            self.gallery.upsert_resident(r)
        return r

    def erase(self, resident_id: str) -> bool:
        """Erase a resident, their templates and delivered check-ins here (secure_delete, pages reclaimed)."""
        with self.lock:
            with self.gallery.db.atomic():
                erased = erase_resident(self.gallery.db, resident_id)
            reclaim(self.gallery.db)
        return bool(erased.resident)
