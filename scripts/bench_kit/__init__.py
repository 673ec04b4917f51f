"""The pieces of ``scripts/bench``: shared videos, enrollment, the two runners, search timing, report."""
