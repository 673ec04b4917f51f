"""``kiosk-console``: the property manager's web console, served beside ``kiosk-ingest``.

It reads the store ``kiosk-ingest`` fills (check-ins, refusals) and keeps its
own tables there (accounts, audit log, failed logins, the doors' last word);
it holds the admin's enrollment database and the key that signs gallery
updates, and publishes them over MQTT as ``kiosk-admin gallery publish`` does.
Pages are rendered on the server (Flask, Flask-WTF's forms and CSRF, Flask's
signed-cookie sessions, checked on the server too) and served by waitress.
See docs/console.md.
"""
