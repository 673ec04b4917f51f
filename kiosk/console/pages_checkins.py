"""Check-ins: the overview, today's as they arrive, the daily attendance report (CSV), refusals and spoofs."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date, datetime, time as dtime, timedelta

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, request, url_for

from ..backend import report as rep
from ..errors import ConfigError
from ..sync.events.format import CHECKIN_TYPES
from .charts import by_door_and_hour, heatmap_png
from .doors import doors as door_rows
from .service import zone

bp = Blueprint("checkins", __name__)

#: Today's page shows at most this many check-ins (the newest).
TODAY_MAX = 500
#: Rows of the attendance report per page (the CSV has them all).
DAILY_PAGE = 200


def _midnight(d: date, tz) -> float:
    return (datetime.combine(d, dtime(0), tz) if tz else datetime.combine(d, dtime(0)).astimezone()).timestamp()


def _today(tz) -> date:
    return datetime.now(tz).date() if tz else date.today()


def _checkins(since: float, limit: int = TODAY_MAX) -> list[dict]:
    rows = list(g.console.store.events(since=since, types=CHECKIN_TYPES))[-limit:]
    names = g.console.residents.names({e["resident_id"] for e in rows if e["resident_id"]})
    for e in rows:
        e["name"] = names.get(e["resident_id"], "")
    rows.reverse()  # newest first
    return rows


def overview():
    tz = g.console.tz
    today = _checkins(_midnight(_today(tz), tz))
    doors = door_rows(g.console.store, g.console.site, offline_after_s=g.console.config.console.offline_after_s)
    pub = g.console.publisher
    return render_template("overview.html", today=len(today), residents=g.console.residents.count(), doors=doors,
                           online=sum(d.state == "online" for d in doors),
                           publisher_error=pub.last_error if pub else None)


@bp.route("/checkins/today")
def today():
    tz = g.console.tz
    start = _midnight(_today(tz), tz)
    return render_template("today.html", rows=_checkins(start), start=start)


@bp.route("/checkins/today.json")
def today_json():
    """What the live update script polls: today's check-ins after ``after`` (event time), newest first."""
    tz = g.console.tz
    start = _midnight(_today(tz), tz)
    try:
        after = float(request.args.get("after", start))
    except ValueError:
        abort(400)
    rows = [e for e in _checkins(start) if e["event_time"] > after]
    from .app import when

    return jsonify([{"time": when(e["event_time"]), "t": e["event_time"], "door": f"{e['site']}/{e['device']}",
                     "name": e["name"], "resident": e["resident_id"], "method": e["method"] or e["type"]}
                    for e in rows])


def _period():
    """(since, until, tz, values for the form) from ?from=YYYY-MM-DD&to=YYYY-MM-DD&tz=ZONE (``to`` included)."""
    tzname = request.args.get("tz", "").strip() or g.console.config.console.timezone
    tz = zone(tzname) if tzname else None
    today = _today(tz)
    try:
        first = date.fromisoformat(request.args["from"]) if request.args.get("from") else today - timedelta(days=6)
        last = date.fromisoformat(request.args["to"]) if request.args.get("to") else today
    except ValueError:
        raise ConfigError("dates are YYYY-MM-DD") from None
    if last < first:
        raise ConfigError("'to' is before 'from'")
    if (last - first).days > 366:
        raise ConfigError("at most a year at a time")
    return _midnight(first, tz), _midnight(last + timedelta(days=1), tz), tz, \
        {"from": first.isoformat(), "to": last.isoformat(), "tz": tzname}


def _bad_period(e: ConfigError, template: str, **extra):
    return render_template(template, error=str(e), form=dict(request.args), table=None, **extra), 400


def csv_response(table: rep.Table, name: str) -> Response:
    return Response(table.csv(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


class _Reports:
    """Reports kept while the events of their range stay the same (:meth:`Store.events_state`): paging through
    a report, or exporting the one on screen, does not read and count a week's events again."""

    KEEP = 16

    def __init__(self):
        self._kept: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, state, make):
        with self._lock:
            hit = self._kept.get(key)
            if hit is not None and hit[0] == state:
                self._kept.move_to_end(key)
                return hit[1]
        value = make()
        with self._lock:
            self._kept[key] = (state, value)
            while len(self._kept) > self.KEEP:
                self._kept.popitem(last=False)
        return value


def _kept(key, since: float, until: float, make):
    """``make()``, kept while the events of [since, until) stay the same."""
    reports = current_app.extensions.setdefault("console_reports", _Reports())
    return reports.get(key, g.console.store.events_state(since=since, until=until), make)


@bp.route("/reports/daily")
def daily():
    try:
        since, until, tz, form = _period()
    except ConfigError as e:
        return _bad_period(e, "daily.html")
    if request.args.get("format") == "csv":
        csv_text = _kept(("daily.csv", since, until, form["tz"]), since, until,
                         lambda: rep.daily(g.console.store, since=since, until=until, tz=tz).csv())
        return Response(csv_text, mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="attendance-{form["from"]}-to-{form["to"]}.csv"'})
    # The page shows the rows a page at a time, counted and cut in SQL; the CSV has them all.
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    table, total = _kept(("daily", since, until, form["tz"], page), since, until,
                         lambda: rep.daily_page(g.console.store, since=since, until=until, tz=tz, limit=DAILY_PAGE,
                                                offset=(page - 1) * DAILY_PAGE))
    pages = max(1, (total + DAILY_PAGE - 1) // DAILY_PAGE)
    names = g.console.residents.names({r[1] for r in table.rows})
    return render_template("daily.html", table=table, form=form, names=names, error=None, page=page, pages=pages,
                           total=total, csv=url_for(".daily", **form, format="csv"))


@bp.route("/reports/refusals")
def refusals():
    try:
        since, until, tz, form = _period()
    except ConfigError as e:
        return _bad_period(e, "refusals.html")
    table = rep.refusals(g.console.store, since=since, until=until)
    return render_template("refusals.html", table=table, form=form, error=None,
                           charts=[url_for(".chart", kind=k, **form) for k in ("refusals", "spoofs")])


CHARTS = {"refusals": ("Refusals at the doors by hour", tuple(t for t in rep.REFUSED_TYPES if t != "spoof")),
          "spoofs": ("Spoofs (photos, screens, masks) by hour", ("spoof",))}


@bp.route("/reports/<kind>.png")
def chart(kind: str):
    if kind not in CHARTS:
        abort(404)
    try:
        since, until, tz, form = _period()
    except ConfigError:
        abort(400)
    title, types = CHARTS[kind]
    png = heatmap_png(f"{title}, {form['from']} to {form['to']}",
                   by_door_and_hour(g.console.store, types, since=since, until=until, tz=tz))
    return Response(png, mimetype="image/png")
