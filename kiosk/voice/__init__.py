"""Voice prompts: the screen's instructions and outcomes, spoken (off by default).

:mod:`.build` makes one WAV file per :class:`~kiosk.prompts.Prompt` with
espeak-ng at build time; :mod:`.player` plays them through ALSA.
"""
