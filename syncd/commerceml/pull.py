"""Feeding lxml ourselves: every record libxml2 finished before a syntax error is delivered.

`etree.iterparse` reads the stream in chunks of its own choosing and, since lxml 6.2, drops the
events of a chunk whose parsing raised: the records complete before the damage in that chunk were
lost without a trace (lxml 6.1 delivered them). The reader's recovery (recovery.py) needs exactly
"everything before the damage was delivered" to find the damaged record, so it cannot depend on how
many bytes lxml happens to read at once.

Here syncd reads the chunks and feeds an `XMLPullParser`; when `feed` raises, the events collected
before the error are still in the parser's queue and are drained first. The queue is documented API
(`read_events`); tests/commerceml/test_recovery.py runs every recovery case over feed sizes from a
few bytes to megabytes, and `make test-compat` / `make test-latest` run them on lxml 6.1 and on the
newest allowed lxml, so a change of this behaviour is a named failure, not a lost document.
"""

from __future__ import annotations

from typing import Any, Generator, Iterable

from lxml import etree

from .safety import parser_options

# 64 KiB: large enough that feeding costs nothing measurable against parsing (bench/commerceml.py),
# small enough that the text limit check (reader.py) measures few records.
FEED_SIZE = 1 << 16

Event = tuple[str, Any]


class Pull:
    """Events of one stream; `error` is the XMLSyntaxError that stopped it, `root` the root element."""

    def __init__(self, stream: Any, *, events: tuple[str, ...], tag: Iterable[str] | None = None,
                 encoding: str | None = None, feed_size: int | None = None, **options: Any) -> None:
        self._stream = stream
        self._feed_size = feed_size or FEED_SIZE
        kw = dict(parser_options())
        kw.update(options)
        self._parser = etree.XMLPullParser(events=events, tag=tag, encoding=encoding, **kw)
        self.error: etree.XMLSyntaxError | None = None
        self.root: Any = None

    def __iter__(self) -> Generator[Event, None, None]:
        parser, read, size = self._parser, self._stream.read, self._feed_size
        while True:
            chunk = read(size)
            try:
                if chunk:
                    parser.feed(chunk)
                else:
                    self.root = parser.close()
            except etree.XMLSyntaxError as e:
                self.error = e
            # what the parser finished before an error is in its queue: deliver it before the error
            yield from parser.read_events()
            if self.error is not None or not chunk:
                return


__all__ = ["Pull", "FEED_SIZE"]
