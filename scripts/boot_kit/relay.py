"""Join one connection from the virtual machine to a port on this machine's loopback.

QEMU runs this for each connection the machine opens to a forwarded address
(``guestfwd=tcp:ADDR:PORT-cmd:python relay.py LOOPBACK_PORT``); the
connection is its standard input and output. Nothing may be written to
standard error: it is the same socket.

    relay.py PORT
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def main() -> int:
    port = int(sys.argv[1])
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return 1  # the machine sees the connection closed, as with nothing listening
    upstream.settimeout(None)
    guest_in, guest_out = 0, 1
    sel = selectors.DefaultSelector()
    sel.register(guest_in, selectors.EVENT_READ, "guest")
    sel.register(upstream, selectors.EVENT_READ, "upstream")
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            if key.data == "guest":
                data = os.read(guest_in, 65536)
                if data:
                    upstream.sendall(data)
                else:
                    sel.unregister(guest_in)
                    upstream.shutdown(socket.SHUT_WR)
                    open_ends -= 1
            else:
                try:
                    data = upstream.recv(65536)
                except OSError:
                    data = b""
                if data:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(guest_out, view):]
                else:
                    sel.unregister(upstream)
                    open_ends -= 1
                    return 0  # the service closed: close the machine's connection too
    return 0


if __name__ == "__main__":
    sys.exit(main())
