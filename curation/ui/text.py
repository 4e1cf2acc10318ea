"""One rendering rule for user text: labels, class, file and column names, and messages carrying them, as plain text.

Streamlit renders Markdown (GitHub-flavoured, with autolinks, ``:material/...:`` icons, ``:red[...]``
colours and ``$...$`` maths) in ``st.markdown``, ``st.success``/``st.error``/``st.warning``/``st.info``,
``st.caption``, ``st.toast``, headers, image captions, and the labels of buttons, checkboxes, radios,
expanders and tabs. Text that a user or a file supplied goes through :func:`plain` before any of those, so
``![x](http://host/beacon.png)`` stays those characters, ``https://evil%2Eexample`` is no link, and a
right-to-left override (U+202E) cannot reverse what follows it. For ``st.text``, ``st.code`` and data frames
(which never render Markdown) use :func:`clean`.
"""

from __future__ import annotations

import re
from typing import Any

_ASCII_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
"""Every ASCII punctuation character: CommonMark lets each be backslash-escaped, which turns it into a literal
character and breaks every construct it starts (links, images, autolinks ``https://`` / ``www.`` / ``a@b``,
emphasis, code, HTML, entities ``&#58;``, icons and colours ``:name:``, maths ``$``, percent escapes)."""

BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Bidirectional formatting characters (embeddings, overrides, isolates, marks): shown, never obeyed."""

_LINK_BREAKS = re.compile(r"(\\[:@])|(\\\.)")
WORD_JOINER = "\u2060"
"""Invisible and not a space: placed after every ``:`` and ``@`` and before every ``.`` of user text, it stops GitHub-flavoured
Markdown's autolinker, which looks for ``http://``, ``www.`` and ``name@host.tld`` in the text *after* escapes are
decoded (so escaping alone leaves ``https://host`` a live link)."""

_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NEWLINES = re.compile(r"[\r\n\t]+")


def clean(text: Any) -> str:
    """``text`` as a string that displays as what it is, for places that never render Markdown (``st.text``,
    ``st.code``, data frames): bidi controls become a visible ``⟨U+202E⟩``, other control characters a space."""
    s = str(text)
    s = BIDI_CONTROLS.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", s)
    return _CONTROLS.sub(" ", s)


def plain(text: Any) -> str:
    """``text`` for anything Streamlit renders as Markdown: shown character for character, never as a link,
    image, emphasis, icon or HTML, on one line, with bidi controls made visible (see :func:`clean`).

    Every ASCII punctuation character is backslash-escaped, and an invisible word joiner (U+2060) follows each
    ``:`` and ``@`` and precedes each ``.`` (see :data:`WORD_JOINER`)."""
    s = _NEWLINES.sub(" ", clean(text))
    s = _ASCII_PUNCT.sub(r"\\\1", s)
    return _LINK_BREAKS.sub(lambda m: m.group(1) + WORD_JOINER if m.group(1) else WORD_JOINER + m.group(2), s)


def plain_lines(text: Any) -> str:
    """:func:`plain` of each line of ``text``, joined by Markdown line breaks (a report of several lines)."""
    return "  \n".join(plain(line) for line in str(text).splitlines())


def plain_all(texts: Any) -> list[str]:
    """:func:`plain` of every item (captions of an image grid, radio options, tab labels)."""
    return [plain(t) for t in texts]
