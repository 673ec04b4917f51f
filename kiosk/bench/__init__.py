"""``kiosk bench``: what each stage costs on this device, and the settings that follow from it.

- :mod:`.measure` times every stage once per call on this device's frames
  (the configured camera or a clip), with the real models and gallery;
- :mod:`.plan` runs the real recogniser on a virtual clock, its stages
  costing what was measured, to find the time from a face appearing to the
  door decision, and recommends ``capture.fps``, ``detect.far_scale`` and the
  motion gate from that;
- :mod:`.command` is the command line (a table, or ``--json``).

It reads only: nothing is written into the state folder and the door is
never touched.
"""
