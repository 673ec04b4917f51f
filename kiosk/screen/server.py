"""The door screen's web server: Flask under waitress, in a thread of the daemon.

Pages are rendered on the server (``templates/door.html``); a little script
follows ``/events`` (server-sent events, one JSON view per change) and
refreshes ``/camera.jpg``. By default the server listens on loopback only,
and answers 403 to any request that does not come from loopback and 400 to
a ``Host`` that is not loopback's (a web page elsewhere cannot rebind its
name to the kiosk). ``[screen] open_to_network`` lifts both, on purpose.

waitress writes each chunk of a streamed response out at once (its
``send_bytes`` is 1 since waitress 2.0), so an event reaches the page when it
is yielded; ``tests/screen/test_server.py`` checks that it does.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time

from flask import Flask, Response, abort, render_template, request

from ..prompts import TEXTS, Prompt
from .camera import LiveView
from .state import ScreenState

log = logging.getLogger(__name__)

#: Seconds between keep-alive comments on an idle event stream (a closed page is noticed by then).
KEEPALIVE_S = 5.0
#: How often a waiting event stream looks at the clock (messages expire on their own).
_TICK_S = 0.5


def is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def create_app(state: ScreenState, live: LiveView, *, open_to_network: bool = False,
               stopping: threading.Event | None = None) -> Flask:
    """The door screen's Flask application (``stopping`` ends every event stream)."""
    app = Flask(__name__)
    stopping = stopping or threading.Event()
    if not open_to_network:
        # Flask's own Host check: only loopback's names (a DNS-rebinding page gets 400).
        app.config["TRUSTED_HOSTS"] = ["127.0.0.1", "localhost", "[::1]", "::1"]

    @app.before_request
    def _loopback_only():
        if not open_to_network and not is_loopback(request.remote_addr):
            log.warning("door screen: refused a request from off the device")
            abort(403)

    @app.after_request
    def _private(resp: Response) -> Response:
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @app.get("/")
    def door():
        # The page says "out of service" by itself when it loses the daemon (stopped, restarting).
        return render_template("door.html", view=state.view(), lost=TEXTS[Prompt.OUT_OF_SERVICE])

    @app.get("/state")
    def view():
        return state.view()

    @app.get("/events")
    def events():
        def stream():
            last, version, quiet = None, -1, time.monotonic()
            yield "retry: 1000\n\n"
            while not stopping.is_set():
                version = state.wait(version, _TICK_S)
                now = state.view()
                if now != last:
                    last, quiet = now, time.monotonic()
                    yield f"data: {json.dumps(now, separators=(',', ':'))}\n\n"
                elif time.monotonic() - quiet >= KEEPALIVE_S:
                    quiet = time.monotonic()
                    yield ": keep-alive\n\n"

        return Response(stream(), mimetype="text/event-stream")

    @app.get("/camera.jpg")
    def camera():
        data = live.jpeg()
        if data is None:
            return Response("no picture", status=404, mimetype="text/plain")
        return Response(data, mimetype="image/jpeg")

    return app


class ScreenServer:
    """The app served by waitress on ``host``:``port`` (0: any free port) in a thread named ``screen``."""

    def __init__(self, state: ScreenState, live: LiveView, *, host: str = "127.0.0.1", port: int = 0,
                 open_to_network: bool = False, threads: int = 6):
        from waitress import create_server

        self.state = state
        self._stopping = threading.Event()
        app = create_app(state, live, open_to_network=open_to_network, stopping=self._stopping)
        # One thread per open event stream and per picture: a page holds one, plus a few for its requests.
        self._server = create_server(app, host=host, port=port, threads=threads, ident="kiosk",
                                     clear_untrusted_proxy_headers=True)
        self.host = host
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._run, name="screen", daemon=True)
        if open_to_network:
            log.warning("door screen open to the network on %s:%d ([screen] open_to_network): anyone who can "
                        "reach it sees the camera and who is let in", host, self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "ScreenServer":
        self._thread.start()
        log.info("door screen on %s", self.url)
        return self

    def _run(self) -> None:
        from waitress import wasyncore

        m = self._server._map
        try:
            # Turns of waitress's own loop, so that it can be stopped from here, in its own thread.
            while not self._stopping.is_set():
                wasyncore.loop(timeout=0.2, map=m, count=1)
        finally:
            self._server.task_dispatcher.shutdown(timeout=2)
            wasyncore.close_all(m)

    def close(self) -> None:
        """Stop serving: event streams end, connections close. Safe to call twice."""
        self._stopping.set()
        self.state.wake()
        if self._thread.is_alive():
            self._thread.join(5)
        elif not self._thread.ident:  # never started
            from waitress import wasyncore

            wasyncore.close_all(self._server._map)

    def __enter__(self) -> "ScreenServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
