"""Text from files (names, headers, table cells) made safe to show in Streamlit's markdown."""

from __future__ import annotations

import re

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$])")
_AUTOLINK = re.compile(r"(?i)(?<=www)(?=\\\.)|(?<=[a-z])(?=\\:/)|(?<=@)")  # where GFM would start a link
_JOINER = "\u2060"  # invisible, but breaks the pattern


def plain(text: str) -> str:
    """Text from files (names, headers) made inert for the markdown of st.error and friends:
    markdown characters escaped, and URLs and e-mail addresses kept from becoming links."""
    return _AUTOLINK.sub(_JOINER, _MARKDOWN.sub(r"\\\1", str(text)))
