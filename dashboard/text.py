"""Text for the pages: text from files (names, headers, table cells) made safe to show in
Streamlit's markdown, and durations and progress in words."""

from __future__ import annotations

import re

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$])")
_AUTOLINK = re.compile(r"(?i)(?<=www)(?=\\\.)|(?<=[a-z])(?=\\:/)|(?<=@)")  # where GFM would start a link
_JOINER = "\u2060"  # invisible, but breaks the pattern


def plain(text: str) -> str:
    """Text from files (names, headers) made inert for the markdown of st.error and friends:
    markdown characters escaped, and URLs and e-mail addresses kept from becoming links."""
    return _AUTOLINK.sub(_JOINER, _MARKDOWN.sub(r"\\\1", str(text)))


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def progress_text(done: int, total: int, elapsed: float) -> str:
    """``done`` of ``total`` series, the time so far and, from the pace so far, the time left."""
    left = elapsed / done * (total - done) if done else None
    return (f"{done} / {total} series · {duration(elapsed)} elapsed"
            + (f" · about {duration(left)} left" if left is not None and done < total else ""))


def dask_link(where: str) -> str:
    """Where a Dask job runs ("2 Dask workers at tcp://... (dashboard: URL)", `pipeline.executor`)
    as Markdown, the Dask dashboard a link."""
    return re.sub(r"\(dashboard: (\S+)\)", r"([Dask dashboard](\1))", where)
