"""One place for safe XML and zip handling.

XML: no DTD at all (a DOCTYPE is a `ProtocolError` — this stops XXE and billion laughs before the
parser sees them), no entity resolution, no network, no huge-tree mode, limits on file size, element
depth and text size. Zip: member count, total size, per-member ratio, traversal, symlinks, script
extensions, all enforced while streaming so a lying header does not help a bomb.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Union

from lxml import etree

from syncd.errors import ProtocolError

from .encoding import Sniffed, sniff_encoding

Source = Union[str, os.PathLike, bytes, BinaryIO]

HEAD_SIZE = 64 * 1024
SCRIPT_EXTENSIONS = frozenset({
    ".php", ".php3", ".php4", ".php5", ".php7", ".phtml", ".phar", ".pht", ".pl", ".py", ".cgi",
    ".sh", ".bash", ".exe", ".bat", ".cmd", ".com", ".js", ".asp", ".aspx", ".jsp", ".htaccess",
    ".so", ".dll",
})


@dataclass(frozen=True)
class Limits:
    """Safety limits; every one can be overridden per call."""

    max_file_size: int = 4 * 1024**3          # bytes of one XML file
    # element nesting: libxml2 itself stops at 256, at no cost; a lower value is checked on
    # every record (an XPath walk, ~5–10 % of the reader's time)
    max_depth: int = 256
    max_text: int = 1024**2                    # characters of one element's text
    max_zip_members: int = 10_000
    max_unzipped_size: int = 4 * 1024**3       # total uncompressed bytes of one archive
    max_zip_ratio: float = 200.0               # uncompressed / compressed, per member
    max_record: int = 64 * 1024**2             # bytes of one damaged record (see recovery.py)


DEFAULT_LIMITS = Limits()


def parser_options() -> dict:
    """The options every lxml parser in syncd is built with."""
    return dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                dtd_validation=False, remove_comments=True, remove_pis=True)


def safe_parser(encoding: str | None = None) -> etree.XMLParser:
    return etree.XMLParser(encoding=encoding, **parser_options())


# ---- XML sources ---------------------------------------------------------------------------------

class _Reader(io.RawIOBase):
    """`head` then the rest of `f`, counting bytes against the file-size limit."""

    def __init__(self, head: bytes, f: IO[bytes], limit: int, owned: bool,
                 origin: tuple[str, object, int] | None = None) -> None:
        self._head, self._f, self._limit, self._owned = head, f, limit, owned
        self.consumed = 0
        self.largest = 0          # the largest single read: how far back a record can start
        self.eof = False
        # where the bytes can be read again after a syntax error: ("bytes", data, start),
        # ("path", path, start) or ("file", fileobj, start); None when they cannot
        self.origin = origin

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._head:
            data = self._head if n < 0 or n >= len(self._head) else self._head[:n]
            self._head = self._head[len(data):]
        else:
            data = self._f.read(n)
            if not data:
                self.eof = True
        self.consumed += len(data)
        if len(data) > self.largest:
            self.largest = len(data)
        if self.consumed > self._limit:
            raise ProtocolError(f"file larger than the limit of {self._limit} bytes")
        return data

    def close(self) -> None:
        if self._owned:
            self._f.close()
        super().close()


class _Spool(io.RawIOBase):
    """A one-way stream read through a copy on disk, which `rest()` completes for re-reading."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        self._f, self._limit = f, limit
        self.file: IO[bytes] = tempfile.TemporaryFile(prefix="syncd-cml-")
        self._size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self._f.read(n)
        if data:
            self._size += len(data)
            if self._size > self._limit:
                raise ProtocolError(f"file larger than the limit of {self._limit} bytes")
            self.file.write(data)
        return data

    def rest(self) -> IO[bytes]:
        """The whole stream's bytes: what was read so far plus what is left, on disk."""
        while self.read(1 << 20):
            pass
        self.file.flush()
        return self.file

    def close(self) -> None:
        self.file.close()
        super().close()


_PROLOG_SKIP = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->)", re.S)


def check_prolog(head: bytes) -> None:
    """Refuse any DOCTYPE: the prolog may hold only the declaration, PIs, comments and space."""
    pos = 0
    if head.startswith(b"\xef\xbb\xbf"):
        pos = 3
    while True:
        m = _PROLOG_SKIP.match(head, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
    rest = head[pos:].lstrip()
    line = head.count(b"\n", 0, len(head) - len(rest)) + 1
    if rest[:9].upper() == b"<!DOCTYPE" or rest.startswith(b"<!ENTITY"):
        raise ProtocolError("DTD/DOCTYPE is not allowed in CommerceML (entity expansion and external "
                            "entities are refused)", line=line)
    if not rest:
        if len(head) >= HEAD_SIZE:
            raise ProtocolError("XML prolog longer than 64 KiB", line=line)
        raise ProtocolError("empty file or no root element", line=line)
    if not rest.startswith(b"<"):
        raise ProtocolError("not XML: content before the root element", line=line)


def open_xml(source: Source, limits: Limits = DEFAULT_LIMITS) -> tuple[_Reader, Sniffed]:
    """Open `source` for parsing: size check, prolog check (no DTD), encoding decision.

    Returns a binary reader positioned for the parser (a mismatching BOM already skipped) and the
    encoding decision; pass `sniffed.encoding` to the parser when `sniffed.override` is set.
    """
    owned = False
    origin: tuple[str, object, int] | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        f: IO[bytes] = io.BytesIO(data)
        origin = ("bytes", data, 0)
    elif isinstance(source, (str, os.PathLike)):
        try:
            size = os.path.getsize(source)
            f = open(source, "rb")
        except OSError as e:
            raise ProtocolError(f"cannot read {os.fspath(source)}: {e.strerror}") from e
        owned = True
        origin = ("path", source, 0)
        if size > limits.max_file_size:
            f.close()
            raise ProtocolError(f"file is {size} bytes, over the limit of {limits.max_file_size}")
    else:
        f = source
        try:
            origin = ("file", f, f.tell()) if f.seekable() else None
        except (AttributeError, OSError, ValueError):
            origin = None
        if origin is None:
            # a one-way stream (a socket, a pipe): keep a copy, so a damaged record costs one
            # record here too (recovery re-reads the bytes), not the rest of the stream
            f = _Spool(f, limits.max_file_size)
            owned = True
            origin = ("spool", f, 0)
    head = f.read(HEAD_SIZE)
    try:
        check_prolog(head)
        sniffed = sniff_encoding(head)
    except BaseException:
        if owned:
            f.close()
        raise
    reader = _Reader(head[sniffed.skip:], f, limits.max_file_size, owned, origin)
    return reader, sniffed


def is_encoding_error(msg: str) -> bool:
    low = msg.lower()
    return ("not proper utf-8" in low or "invalid utf-8" in low or "encoding error" in low
            or "character encoding" in low)


def is_limit_error(msg: str) -> bool:
    """libxml2 stopped at one of its own limits (depth, huge text): never a one-record problem."""
    low = msg.lower()
    return ("excessive depth" in low or "depth" in low and "document" in low or "huge" in low
            or "too long" in low or "xmlsax2characters" in low)


def syntax_message(e: etree.XMLSyntaxError) -> tuple[str, int | None]:
    """The exact message and line of an lxml syntax error (the exception text can be generic)."""
    msg = str(e.msg if getattr(e, "msg", None) else e)
    line = e.lineno if getattr(e, "lineno", None) else (e.position[0] if e.position else None)
    log = getattr(e, "error_log", None)
    if log is not None:
        entries = [x for x in log if x.level_name == "FATAL"] or list(log)
        if entries:
            msg, line = entries[-1].message, entries[-1].line or line
    return msg.strip(), line


def translate_syntax_error(e: etree.XMLSyntaxError, sniffed: Sniffed | None = None,
                           at_eof: bool = False) -> ProtocolError:
    """lxml's error → ProtocolError with a line number and a plain reason."""
    msg, line = syntax_message(e)
    low = msg.lower()
    if is_encoding_error(low):
        enc = sniffed.encoding if sniffed else "UTF-8"
        reason = f"bytes do not match the encoding {enc} (declared {sniffed.declared if sniffed else None}): {msg}"
    elif "excessive depth" in low or "depth" in low and "document" in low:
        reason = f"element nesting too deep: {msg}"
    elif "premature end" in low or "extra content" not in low and "end of data" in low:
        reason = f"truncated XML (file ends inside an element): {msg}"
    elif "huge" in low or "too long" in low or "xmlsax2characters" in low:
        reason = f"text or name over the parser limit: {msg}"
    elif "entity" in low:
        reason = f"undefined or forbidden entity: {msg}"
    elif at_eof:
        reason = f"truncated or malformed XML at the end of the file: {msg}"
    else:
        reason = f"not well-formed XML: {msg}"
    return ProtocolError(reason, line=line)


# ---- zip -----------------------------------------------------------------------------------------

def _member_path(name: str) -> PurePosixPath:
    clean = name.replace("\\", "/")
    p = PurePosixPath(clean)
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean) or ".." in p.parts or "\x00" in clean:
        raise ProtocolError(f"zip member {name!r} escapes the target folder")
    parts = [x for x in p.parts if x not in ("", ".")]
    if not parts:
        raise ProtocolError(f"zip member {name!r} has an empty name")
    return PurePosixPath(*parts)


def safe_unzip(data_or_path: Source, dest_dir: str | os.PathLike,
               limits: Limits = DEFAULT_LIMITS) -> list[Path]:
    """Extract a zip into `dest_dir` safely and return the extracted file paths.

    Refuses (ProtocolError): more than `max_zip_members` members, absolute or `..` names, symlinks,
    script extensions, a member whose ratio exceeds `max_zip_ratio`, more than `max_unzipped_size`
    bytes in total. Sizes are counted on the bytes actually inflated, not on the headers.
    """
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        fileobj: IO[bytes] | str | os.PathLike = io.BytesIO(bytes(data_or_path))
    else:
        fileobj = data_or_path
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(fileobj)  # type: ignore[arg-type]
    except (zipfile.BadZipFile, OSError) as e:
        raise ProtocolError(f"not a zip file: {e}") from e
    out: list[Path] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_zip_members:
            raise ProtocolError(f"zip has {len(infos)} members, over the limit of {limits.max_zip_members}")
        total = 0
        for info in infos:
            rel = _member_path(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ProtocolError(f"zip member {info.filename!r} is a symlink")
            if info.is_dir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
                continue
            if rel.suffix.lower() in SCRIPT_EXTENSIONS or rel.name.lower() == ".htaccess":
                raise ProtocolError(f"zip member {info.filename!r} has a refused extension")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            compressed = max(info.compress_size, 1)
            if info.file_size / compressed > limits.max_zip_ratio and info.file_size > 1 << 20:
                raise ProtocolError(f"zip member {info.filename!r} declares a ratio over "
                                    f"{limits.max_zip_ratio:g}:1 (zip bomb?)")
            written = 0
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while True:
                        chunk = src.read(1 << 16)
                        if not chunk:
                            break
                        written += len(chunk)
                        if written > info.file_size:
                            raise ProtocolError(f"zip member {info.filename!r} is larger than its "
                                                "header says (zip bomb?)")
                        total += len(chunk)
                        if total > limits.max_unzipped_size:
                            raise ProtocolError(
                                f"zip expands past {limits.max_unzipped_size} bytes (zip bomb?)")
                        if written > 1 << 20 and written / compressed > limits.max_zip_ratio:
                            raise ProtocolError(
                                f"zip member {info.filename!r} expands more than "
                                f"{limits.max_zip_ratio:g}:1 (zip bomb?)")
                        dst.write(chunk)
            except ProtocolError:
                target.unlink(missing_ok=True)
                raise
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                target.unlink(missing_ok=True)
                raise ProtocolError(f"zip member {info.filename!r} is corrupt: {e}") from e
            out.append(target)
    return out


def is_zip(source: Source) -> bool:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:4]) == b"PK\x03\x04"
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    return False


__all__ = ["Limits", "DEFAULT_LIMITS", "SCRIPT_EXTENSIONS", "parser_options", "safe_parser",
           "open_xml", "check_prolog", "translate_syntax_error", "syntax_message", "is_encoding_error",
           "is_limit_error", "safe_unzip", "is_zip"]
