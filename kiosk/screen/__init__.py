"""The door screen: a page the daemon serves on loopback, live over server-sent events.

:mod:`.state` is what the screen says (the door's state and one message at a
time), :mod:`.server` serves it with Flask under waitress, and
:class:`~.panel.ScreenPanel` is the door panel that feeds it.
"""
