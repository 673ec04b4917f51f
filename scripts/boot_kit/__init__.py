"""What scripts/arm64-boot needs to boot the kiosk image and check it from outside.

- :mod:`.machine`: qemu-system-aarch64 (machine ``virt``, UEFI firmware), started
  and stopped by PID, its serial console in a file;
- :mod:`.agent`: the QEMU guest agent over virtio-serial: run a command in the
  machine, write or read a file;
- :mod:`.camera`: an MJPEG camera on loopback whose picture can be changed or stalled;
- :mod:`.relay`: the command QEMU runs for each connection the machine makes to a
  forwarded address (``guestfwd``): it joins it to a loopback port here;
- :mod:`.stamp`: the hash of the image's inputs, and the stamp of the last verified boot.
"""
