"""Text files from and for spreadsheets: CSV cells that cannot run as formulas, and the encoding of a text file."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import pandas as pd

_FORMULA = re.compile(r"'*[=+\-@\t\r]")
"""A cell a spreadsheet may run as a formula (OWASP's list: = + - @ tab CR), possibly behind guard quotes."""
_GUARDED = re.compile(r"'+[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def guard_cell(value: object) -> object:
    """A text cell that starts like a formula gets a leading ``'`` (shown as text by Excel, LibreOffice and
    Google Sheets); plain numbers (``-1``, ``+2.5``) and non-text cells are left alone. :func:`unguard_cell`
    undoes it exactly (a cell that already starts with quotes before such a character gets one more)."""
    if isinstance(value, str) and _FORMULA.match(value) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def unguard_cell(value: object) -> object:
    """The inverse of :func:`guard_cell` (for reading a CSV this project wrote)."""
    if isinstance(value, str) and _GUARDED.match(value) and not _NUMBER.fullmatch(value[1:]):
        return value[1:]
    return value


def _text_columns(df: pd.DataFrame) -> list[object]:
    return [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)]


def guard_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with :func:`guard_cell` applied to every text cell and the header (vectorised), for ``to_csv``."""
    out = df.copy()
    for col in _text_columns(out):
        text = out[col].astype(str)
        is_text = out[col].map(lambda v: isinstance(v, str)).astype(bool)
        hit = is_text & text.str.match(_FORMULA.pattern) & ~text.str.fullmatch(_NUMBER.pattern)
        if hit.any():
            out[col] = out[col].astype(object)
            out.loc[hit, col] = "'" + text[hit]
    out.columns = [guard_cell(c) for c in out.columns]
    return out


def unguard_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The inverse of :func:`guard_frame` (vectorised), for reading a CSV this project wrote."""
    out = df.copy()
    for col in _text_columns(out):
        text = out[col].astype(str)
        is_text = out[col].map(lambda v: isinstance(v, str)).astype(bool)
        hit = is_text & text.str.match(_GUARDED.pattern) & ~text.str[1:].str.fullmatch(_NUMBER.pattern)
        if hit.any():
            out[col] = out[col].astype(object)
            out.loc[hit, col] = text[hit].str[1:]
    out.columns = [unguard_cell(c) for c in out.columns]
    return out


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def sniff_encoding(path: Path | str, *, probe: int = 4096) -> str:
    """The encoding of a text file: its byte-order mark (UTF-8, UTF-16, UTF-32), else UTF-16 without a mark when
    every other byte of the start is NUL (what Excel's "Unicode text" and PowerShell write), else UTF-8."""
    with open(path, "rb") as f:
        head = f.read(probe)
    for bom, enc in _BOMS:  # UTF-32 LE before UTF-16 LE: its mark starts with UTF-16's
        if head.startswith(bom):
            return enc
    if len(head) >= 4:
        even, odd = head[0::2], head[1::2]
        if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
            return "utf-16-le"
        if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
            return "utf-16-be"
    return "utf-8-sig"
