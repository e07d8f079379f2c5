"""After a syntax error: find record boundaries in the raw bytes, so one bad record costs one record.

The streaming reader never looks at bytes; libxml2 stops at the first syntax error and everything
after it would be lost. When that happens the reader asks a `Splitter` for the next record: the
splitter re-reads the file's bytes (in the file's own encoding) from the last boundary the reader
knows, walks the few elements that hold records, skips the records the reader already produced, and
returns the span of the record after them — found by its tags even when they are damaged. The reader
parses that span on its own (lxml, same safe options) and resumes streaming right after it.

The splitter only decides where records begin and end; it never turns bytes into data. Anything it
cannot place (damage outside records, a file that ends inside one) is `Unsplittable`, and the reader
then raises the original error, as it did before recovery existed.
"""

from __future__ import annotations

import html
import io
import mmap
import os
import re
from dataclasses import dataclass
from typing import IO, Any

from syncd.errors import ProtocolError

from .paths import NESTS_IN, ROOT, is_record, may_lead_to, record_kinds_at

# One token at a '<'. Comments, CDATA and PIs are matched by their opener only; their end is looked
# up separately (see _Finder), so an unterminated one costs one search, not one per '<'.
_TOKEN = re.compile(rb"""
    <!--(?P<comment>)
  | <!\[CDATA\[(?P<cdata>)
  | <\?(?P<pi>)
  | </(?P<end>[^\s<>/!?'"=]+)\s*>
  | <(?P<start>[^\s<>/!?'"=]+)(?P<attrs>(?:[^<>"']|"[^"<]*"|'[^'<]*')*)>
""", re.X)
_NAME_AT = re.compile(rb"<([^\s<>/!?'\"=]+)")
_LT = re.compile(rb"<")
_NONSPACE = re.compile(rb"[^ \t\r\n]")
_CLOSERS = {"comment": b"-->", "cdata": b"]]>", "pi": b"?>"}
_BOM = b"\xef\xbb\xbf"

# Elements that hold nothing but records of one kind: anything else inside them is a damaged record.
_ONLY = {"Контейнер": "Документ", "Контрагенты": "Контрагент", "Группы": "Группа",
         "Свойства": "Свойство", "Товары": "Товар", "Предложения": "Предложение"}
_ROOT_SECTIONS = frozenset({"Документ", "Контейнер", "Контрагенты", "Классификатор", "Каталог",
                            "ПакетПредложений", "ИзмененияПакетаПредложений"})


class _NotWhole(Exception):
    """whole_span: the next record is not a clean start tag (it is damaged, or junk comes first)."""


class Unsplittable(Exception):
    """The bytes cannot be split into records here; `error`, when set, is the error to raise."""

    def __init__(self, reason: str, error: ProtocolError | None = None) -> None:
        super().__init__(reason)
        self.reason, self.error = reason, error


@dataclass(frozen=True)
class Frame:
    """An open element around the records: its local name, its name and start tag as written."""

    name: str
    qname: bytes
    tag: bytes


@dataclass(frozen=True)
class Span:
    """One record's bytes: [start, end) of the view, the elements around it, its line and Ид."""

    kind: str
    start: int
    end: int
    stack: tuple[Frame, ...]
    line: int
    record_id: str | None
    after: int = 0        # end of its start tag (whole_span only)


# ---- the bytes ---------------------------------------------------------------------------------

class View:
    """Random access to the original bytes of a source (mmap for files), read forward only."""

    _PAGE = mmap.ALLOCATIONGRANULARITY

    def __init__(self, data: Any, start: int, owned: list) -> None:
        self.data, self.start, self._owned = data, start, owned
        self.size = len(data)
        self._forgotten = 0

    @classmethod
    def open(cls, origin: tuple[str, Any, int] | None) -> "View | None":
        """Bytes of what `open_xml` read, or None when the source cannot be read again."""
        if origin is None:
            return None
        kind, obj, start = origin
        if kind == "bytes":
            return cls(obj, start, [])
        if kind == "path":
            f = open(obj, "rb")
            return cls._map(f, start, [f])
        if kind == "spool":
            return cls._map(obj.rest(), start, [])
        f = obj
        if isinstance(f, io.BytesIO):
            return cls(f.getvalue(), start, [])
        try:
            f.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return None
        return cls._map(f, start, [])

    @classmethod
    def _map(cls, f: IO[bytes], start: int, owned: list) -> "View":
        if os.fstat(f.fileno()).st_size == 0:
            return cls(b"", 0, owned)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(mm, start, [mm, *owned])

    def get(self, a: int, b: int) -> bytes:
        return self.data[a:b]

    def newlines(self, a: int, b: int) -> int:
        if a >= b:
            return 0
        if isinstance(self.data, bytes):
            return self.data.count(b"\n", a, b)
        n = 0
        step = 1 << 22
        for x in range(a, b, step):
            n += self.data[x:min(b, x + step)].count(b"\n")
        return n

    def forget(self, upto: int) -> None:
        """Drop mapped pages before `upto` from memory (they are only re-read if needed)."""
        if isinstance(self.data, mmap.mmap) and upto - self._forgotten >= 1 << 26:
            end = upto - upto % self._PAGE
            try:
                self.data.madvise(mmap.MADV_DONTNEED, 0, end)
            except (AttributeError, OSError, ValueError):   # pragma: no cover - platform without it
                pass
            self._forgotten = end

    def close(self) -> None:
        for x in self._owned:
            x.close()
        self._owned = []


class ViewReader(io.RawIOBase):
    """`head` then the view's bytes from `pos` on: the stream a resumed parse reads."""

    def __init__(self, head: bytes, view: View, pos: int) -> None:
        self._head, self._view, self._pos = head, view, pos
        self.eof = False
        self.consumed = self.largest = 0   # as safety._Reader counts them

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n is None or n < 0:
            n = 1 << 20
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
        else:
            data = self._view.get(self._pos, min(self._view.size, self._pos + n))
            self._pos += len(data)
            if not data:
                self.eof = True
            else:
                self._view.forget(self._pos)
        self.consumed += len(data)
        self.largest = max(self.largest, len(data))
        return data


class _Lines:
    """Line numbers of offsets, counted incrementally from one known (offset, line)."""

    def __init__(self, view: View, pos: int, line: int) -> None:
        self._view, self._pos, self._line = view, pos, line

    def at(self, pos: int) -> int:
        if pos >= self._pos:
            self._line += self._view.newlines(self._pos, pos)
        else:
            self._line -= self._view.newlines(pos, self._pos)
        self._pos = pos
        return self._line


class _Finder:
    """`data.find(term, pos)` remembering its last answer: repeated searches stay linear."""

    def __init__(self, data: Any) -> None:
        self._data = data
        self._last: dict[bytes, tuple[int, int]] = {}

    def find(self, term: bytes, pos: int) -> int:
        hit = self._last.get(term)
        if hit is not None:
            since, at = hit
            if since <= pos and (at < 0 or pos <= at):
                return at
        at = self._data.find(term, pos)
        self._last[term] = (pos, at)
        return at


def _local(qname: bytes, codec: str) -> str:
    return qname.rpartition(b":")[2].decode(codec, "replace")


# ---- the splitter ------------------------------------------------------------------------------

class Splitter:
    """Finds the next record of `kinds` after a point whose surrounding elements are known."""

    def __init__(self, view: View, encoding: str, kinds: tuple[str, ...], *, max_depth: int,
                 max_record: int) -> None:
        self.view, self.data = view, view.data
        self.codec = "cp1251" if encoding.lower() in ("windows-1251", "cp1251") else "utf-8"
        self.kinds = kinds
        self.max_depth, self.max_record = max_depth, max_record
        self._find = _Finder(self.data)
        self._skip_re: dict[bytes, re.Pattern] = {}
        self.lines = _Lines(view, view.start, 1)
        self._whole = False

    # -- tokens ----------------------------------------------------------------------------------
    def _token(self, lt: int) -> tuple[str, Any, int]:
        """(kind, match, end) of the token at `lt`; kind "broken" when none fits."""
        m = _TOKEN.match(self.data, lt)
        if m is None:
            return "broken", None, lt + 1
        for what, closer in _CLOSERS.items():
            if m.group(what) is not None:
                at = self._find.find(closer, m.end())
                if at < 0:
                    return "broken", None, lt + 1
                return what, m, at + len(closer)
        if m.group("end") is not None:
            return "end", m, m.end()
        return "start", m, m.end()

    def _next_lt(self, pos: int) -> int:
        m = _LT.search(self.data, pos)
        return m.start() if m else -1

    def _text_at(self, a: int, b: int) -> int:
        """Offset of the first non-space byte in [a, b), or -1."""
        m = _NONSPACE.search(self.data, a, b)
        return m.start() if m else -1

    # -- entry point -----------------------------------------------------------------------------
    def next_span(self, pos: int | None, line: int, stack: tuple[Frame, ...], skip: int,
                  last: tuple[int, str] | None) -> Span | None:
        """The record after the first `skip` records from `pos` (None: the file start).

        `last` is (line, tag) of the last record the parser produced, to check both count alike.
        Returns None when the file ends cleanly without another record; raises Unsplittable.
        """
        if pos is None:
            pos, stack = self._prolog()
        else:
            self.lines = _Lines(self.view, pos, line)
        frames = list(stack)
        seen = 0
        while True:
            strict = seen >= skip
            lt = self._next_lt(pos)
            text = self._text_at(pos, lt if lt >= 0 else self.view.size)
            if text >= 0:
                if not frames:
                    raise Unsplittable("content after the root element")
                kind = self._junk_kind(frames) if strict else None
                if kind is not None:
                    return self._record(kind, text, frames, opened=False)
            if lt < 0:
                if frames:
                    raise Unsplittable(f"the file ends inside <{frames[-1].name}>")
                return None
            what, m, end = self._token(lt)
            if what in ("comment", "cdata", "pi"):
                if not frames and what == "cdata":
                    raise Unsplittable("content after the root element")
                pos = end
                continue
            if not frames:
                raise Unsplittable("content after the root element")
            path = tuple(f.name for f in frames)
            if what == "broken":
                nm = _NAME_AT.match(self.data, lt)
                name = _local(nm.group(1), self.codec) if nm else None
                if name in self.kinds and is_record(name, path) and strict:
                    return self._record(name, lt, frames, opened=True, after=nm.end())
                kind = self._junk_kind(frames) if strict else None
                if kind is not None:
                    return self._record(kind, lt, frames, opened=False)
                if not strict:
                    raise Unsplittable("the bytes before the damage do not split as the parser read them")
                pos = end
                continue
            if what == "end":
                name = _local(m.group("end"), self.codec)
                if name == frames[-1].name:
                    frames.pop()
                    pos = end
                    continue
                kind = self._junk_kind(frames) if strict else None
                if kind is not None:
                    return self._record(kind, lt, frames, opened=False)
                raise Unsplittable(f"</{name}> does not close <{frames[-1].name}>")
            qname = m.group("start")
            name = _local(qname, self.codec)
            empty = m.group("attrs").endswith(b"/")
            if name in self.kinds and is_record(name, path):
                if not strict:
                    seen += 1
                    if seen == skip:
                        self._check_last(name, end, last)
                    pos = end if empty else self._skip(qname, end)
                    self.view.forget(pos)
                    continue
                return self._record(name, lt, frames, opened=True, after=end, empty=empty)
            if strict and self._junk_kind(frames) is not None and not (
                    len(frames) == 1 and name in _ROOT_SECTIONS):
                return self._record(self._junk_kind(frames), lt, frames, opened=False)
            if empty:
                pos = end
                continue
            if may_lead_to(path + (name,), self.kinds):
                frames.append(Frame(name, qname, self.data[lt:end]))
                if len(frames) > self.max_depth:
                    raise Unsplittable("too deep", ProtocolError(
                        f"element nesting deeper than {self.max_depth}", line=self.lines.at(lt)))
                pos = end
                continue
            pos = self._skip(qname, end) if not strict else self._strict_skip(name, end, len(frames))

    def line_at(self, pos: int) -> int:
        return self.lines.at(pos)

    def whole_span(self, pos: int | None, line: int, stack: tuple[Frame, ...], skip: int,
                   last: tuple[int, str] | None) -> Span | None:
        """The record after the first `skip` ones if its tags are intact: a clean start tag through
        its matching end tag (the caller parses it to be sure); None when anything else comes next.

        After a parser's error this walks the records it may or may not have reported, up to the
        damage, without trusting what it reported.
        """
        self._whole = True
        try:
            return self.next_span(pos, line, stack, skip, last)
        except (Unsplittable, _NotWhole):
            return None
        finally:
            self._whole = False

    # -- pieces ----------------------------------------------------------------------------------
    def _prolog(self) -> tuple[int, tuple[Frame, ...]]:
        pos = self.view.start
        if self.data[pos:pos + 3] == _BOM:
            pos += 3
        while True:
            lt = self._next_lt(pos)
            if lt < 0 or self._text_at(pos, lt) >= 0:
                raise Unsplittable("no root element")
            what, m, end = self._token(lt)
            if what in ("comment", "pi"):
                pos = end
                continue
            if what != "start" or _local(m.group("start"), self.codec) != ROOT or \
                    m.group("attrs").endswith(b"/"):
                raise Unsplittable("no <КоммерческаяИнформация> root element")
            return end, (Frame(ROOT, m.group("start"), self.data[lt:end]),)

    def _check_last(self, name: str, end: int, last: tuple[int, str] | None) -> None:
        if last is None:
            return
        line = self.lines.at(end - 1)        # libxml2 numbers an element by the end of its start tag
        if (line, name) != last:
            raise Unsplittable(f"record {last[1]} of line {last[0]} not found where the parser left "
                               f"(found {name} at line {line})")

    def _junk_kind(self, frames: list[Frame]) -> str | None:
        """The record kind a stray piece at this level must be a damaged copy of, if any."""
        path = tuple(f.name for f in frames)
        here = record_kinds_at(path, self.kinds)
        if not here:
            return None
        if len(frames) == 1:
            return "Документ" if "Документ" in here else None
        kind = _ONLY.get(frames[-1].name)
        return kind if kind in here else None

    def _skip_pattern(self, qname: bytes) -> re.Pattern:
        p = self._skip_re.get(qname)
        if p is None:
            p = self._skip_re[qname] = re.compile(
                rb"<(/?)" + re.escape(qname) + rb"(?=[\s/>])|<!--|<!\[CDATA\[|<\?")
        return p

    def _skip(self, qname: bytes, pos: int) -> int:
        """End of a well-formed element whose start tag ends at `pos` (same-name depth counting)."""
        pattern = self._skip_pattern(qname)
        depth = 1
        while True:
            m = pattern.search(self.data, pos)
            if m is None:
                raise Unsplittable(f"the file ends inside <{_local(qname, self.codec)}>")
            what, tm, end = self._token(m.start())
            if what == "broken":
                pos = end
                continue
            if what == "end":
                depth -= 1
                if depth == 0:
                    return end
            elif what == "start" and not tm.group("attrs").endswith(b"/"):
                depth += 1
            pos = end

    def _strict_skip(self, name: str, pos: int, depth0: int) -> int:
        """End of an element that holds no record, checking its tags pair up."""
        inner = [name]
        while True:
            lt = self._next_lt(pos)
            if lt < 0:
                raise Unsplittable(f"the file ends inside <{inner[-1]}>")
            what, m, end = self._token(lt)
            if what == "broken":
                raise Unsplittable(f"damaged markup inside <{name}>")
            if what == "end":
                nm = _local(m.group("end"), self.codec)
                if nm != inner[-1]:
                    raise Unsplittable(f"</{nm}> does not close <{inner[-1]}>")
                inner.pop()
                if not inner:
                    return end
            elif what == "start" and not m.group("attrs").endswith(b"/"):
                inner.append(_local(m.group("start"), self.codec))
                if depth0 + len(inner) > self.max_depth:
                    raise Unsplittable("too deep", ProtocolError(
                        f"element nesting deeper than {self.max_depth}", line=self.lines.at(lt)))
            pos = end

    def _record(self, kind: str, start: int, frames: list[Frame], *, opened: bool,
                after: int | None = None, empty: bool = False) -> Span:
        """The span of a record starting at `start` (its start tag, maybe damaged, or a stray piece).

        `opened`: `start` is the record's own start tag, ending at `after`; otherwise the piece is a
        record whose start tag was lost, and it runs to its end tag or to where the next one begins.

        Where the record ends: at its end tag when the tags inside pair up; before the next record's
        start tag or an end tag of an enclosing element when they do not. In an indented file (1C
        and the CMSs indent their exports) the column decides instead: the record's end tag and the
        next record's start tag sit at the record's own column, nested ones deeper — which keeps a
        `Группа` tree with one lost tag from swallowing its sibling groups.
        """
        stack = tuple(frames)
        line = self.lines.at(start)
        if self._whole:
            m = _TOKEN.match(self.data, start) if opened and after is not None else None
            if m is None or m.group("start") is None:
                raise _NotWhole
            end = after if empty else self._skip(m.group("start"), after)
            return Span(kind, start, end, stack, line, None, after)
        if empty:
            return Span(kind, start, after, stack, line, None)
        ancestors = {f.name for f in frames}
        parent = NESTS_IN.get(kind)
        opens_inside = ancestors - {parent}  # start tags that cannot be inside (<Группы> can)
        inner: list[str] = [kind] if opened else []
        top = len(inner)                      # depth of the record's own children
        record_id = None
        column = self._column(start)          # None: not first on its line
        indented: bool | None = None if column is not None else False
        maybe: list[int] = []                 # <kind> taken as nested on weak evidence: maybe the next record
        pos = after if opened and after is not None else start
        if not opened:
            first = _TOKEN.match(self.data, start)
            if first is not None and first.group("start"):
                name = _local(first.group("start"), self.codec)
                if name != "Ид" and not first.group("attrs").endswith(b"/"):
                    inner, top, pos = [name], 1, first.end()    # the record's own start tag, misspelt
            elif first is not None and first.group("end") and _local(first.group("end"), self.codec) == kind:
                inner, top, pos = ["/"], 1, first.end()         # "</Документ>" written for "<Документ>"

        def span(end: int) -> Span:
            if end <= start:                  # nothing to reject: the damage is in the structure
                raise Unsplittable(f"damaged markup where a <{kind}> should be, line {line}")
            return Span(kind, start, end, stack, line, record_id)

        def cut(at: int) -> Span:             # the record lost its end before `at`
            return span(self._trim(maybe[0] if maybe else at))

        while True:
            if pos - start > self.max_record:
                raise Unsplittable("record too large", ProtocolError(
                    f"<{kind}> at line {line} is damaged and runs past {self.max_record} bytes "
                    "without an end", line=line))
            lt = self._next_lt(pos)
            if lt < 0:
                if maybe:
                    return cut(lt)
                raise Unsplittable(f"the file ends inside <{kind}> of line {line}")
            what, m, end = self._token(lt)
            if what in ("comment", "cdata", "pi"):
                pos = end
                continue
            if indented is None and what in ("start", "end", "broken"):
                col = self._column(lt)        # the first tag inside tells whether the file is indented
                indented = col is not None and column is not None and col > column
            at_column = indented and self._column(lt) == column
            if what == "broken":
                nm = _NAME_AT.match(self.data, lt)
                if nm and _local(nm.group(1), self.codec) == kind and (
                        parent is None or at_column or not indented and len(inner) <= 1):
                    return span(self._trim(lt))
                pos = end
                continue
            if what == "end":
                name = _local(m.group("end"), self.codec)
                if indented and name == kind:
                    if at_column:
                        return span(end)
                    if name in inner:
                        while inner.pop() != name:
                            pass
                elif name in inner:
                    while inner.pop() != name:
                        pass
                    if opened and not inner:
                        if self._boundary_after(end, kind, frames, ancestors):
                            return span(end)
                        inner = [kind]        # closed too early (a nested start tag was damaged)
                elif name == kind and not opened:
                    return span(end)
                elif name in ancestors and (name != parent or self._closes_container(
                        lt, m.end(), frames, indented, column)):
                    return cut(lt)
                pos = end
                continue
            qname = m.group("start")
            name = _local(qname, self.codec)
            empty_tag = m.group("attrs").endswith(b"/")
            if name == kind:
                if indented:
                    nested = parent is not None and not at_column
                elif parent is not None and inner[-1:] == [parent]:
                    nested = True
                elif parent is not None and len(inner) > 1:
                    nested = True             # inside some child: a damaged <Группы>/<Представитель>,
                    maybe.append(lt)          # or the record lost its end tag

                else:
                    nested = False
                if not nested:
                    if opened and not empty_tag and self._ends_here(end, kind, ancestors):
                        return span(end)      # '/' lost: <X> written for </X>
                    if not opened and len(inner) == 0 and lt > start and \
                            self.data[lt - 1:lt] not in (b" ", b"\t", b"\r", b"\n"):
                        # a stray piece glued to the record's start tag ("<<Документ>"): one record
                        rec = self._record(kind, lt, frames, opened=True, after=end, empty=empty_tag)
                        return Span(kind, start, rec.end, stack, line, rec.record_id)
                    return span(self._trim(lt))
            elif name in opens_inside:
                return cut(lt)
            if record_id is None and name == "Ид" and len(inner) == top and not empty_tag:
                record_id = self._id_text(end)
            if not empty_tag:
                inner.append(name)
                if len(frames) + len(inner) > self.max_depth:
                    raise Unsplittable("too deep", ProtocolError(
                        f"element nesting deeper than {self.max_depth}", line=self.lines.at(lt)))
            pos = end

    def _closes_container(self, lt: int, end: int, frames: list[Frame], indented: bool | None,
                          column: int | None) -> bool:
        """Is this `</Группы>` (not opened inside the record) the end of the records' container?"""
        if indented:
            col = self._column(lt)
            return col is not None and column is not None and col <= column
        nxt = self._next_lt(end)
        if nxt < 0:
            return True
        what, m, _ = self._token(nxt)
        if what == "end":
            return len(frames) > 1 and _local(m.group("end"), self.codec) == frames[-2].name
        return what != "broken"

    def _boundary_after(self, pos: int, kind: str, frames: list[Frame], ancestors: set[str]) -> bool:
        """Can a record end at `pos`: is the next thing another record or the end of its container?"""
        lt = self._next_lt(pos)
        if lt < 0:
            return True
        if self._text_at(pos, lt) >= 0:
            return False
        what, m, _ = self._token(lt)
        if what in ("comment", "pi"):
            return True
        if what == "end":
            name = _local(m.group("end"), self.codec)
            if name != frames[-1].name:
                return name in {f.name for f in frames}
            if len(frames) < 2:
                return True
            # the container ends: what follows must fit one level up (Группы/Группа/Группы look alike)
            lt = self._next_lt(m.end())
            if lt < 0 or self._text_at(m.end(), lt) >= 0:
                return lt < 0
            what, m, _ = self._token(lt)
            return what != "end" or _local(m.group("end"), self.codec) == frames[-2].name
        if what == "start":
            name = _local(m.group("start"), self.codec)
        else:
            nm = _NAME_AT.match(self.data, lt)
            name = _local(nm.group(1), self.codec) if nm else ""
        if name == kind:
            return True
        if frames[-1].name in _ONLY:
            return False
        return len(frames) > 1 or name in _ROOT_SECTIONS

    def _column(self, pos: int) -> int | None:
        """Column of `pos` when only spaces precede it on its line, else None."""
        nl = self.data.rfind(b"\n", 0, pos)
        if _NONSPACE.search(self.data, nl + 1, pos):
            return None
        return pos - nl - 1

    def _ends_here(self, pos: int, kind: str, ancestors: set[str]) -> bool:
        """After a `<kind>` inside a record: does the next tag show it was meant as `</kind>`?"""
        lt = self._next_lt(pos)
        if lt < 0:
            return True
        if self._text_at(pos, lt) >= 0:
            return False
        what, m, _ = self._token(lt)
        if what == "end":
            return _local(m.group("end"), self.codec) in ancestors
        if what == "start":
            return _local(m.group("start"), self.codec) == kind
        nm = _NAME_AT.match(self.data, lt)
        return bool(nm) and _local(nm.group(1), self.codec) == kind

    def _trim(self, end: int) -> int:
        while end > 0 and self.data[end - 1:end] in (b" ", b"\t", b"\r", b"\n"):
            end -= 1
        return end

    def _id_text(self, pos: int) -> str | None:
        lt = self._next_lt(pos)
        if lt < 0 or lt - pos > 4096:
            return None
        text = self.data[pos:lt].decode(self.codec, "replace").strip()
        if "&" in text:
            text = html.unescape(text)
        return text or None


__all__ = ["Splitter", "Span", "Frame", "View", "ViewReader", "Unsplittable"]
