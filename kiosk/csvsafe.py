"""CSV a spreadsheet opens as data: text that would be read as a formula is neutralised.

Excel, LibreOffice and Google Sheets run a cell that starts with ``=``,
``+``, ``-`` or ``@`` as a formula (``=HYPERLINK(...)`` sends a click, with
whatever the sheet holds, to someone else's server); a leading tab or
carriage return can hide such a start. OWASP's advice for CSV injection is
followed: such a *text* cell gets a single quote in front, which spreadsheets
show as text and do not run. Numbers that we write as numbers (counts,
distances, times) stay as they are, minus sign included: a number is never a
formula. Text that only looks like a number (``"-1"`` in a claim a device
signed as a string) is text, and is quoted like any other.
"""

from __future__ import annotations

#: What a text cell may not start with (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows rather than runs."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
