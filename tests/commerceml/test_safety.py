"""Hostile inputs: each gives the documented error, and the good part of a batch is still read."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from syncd.commerceml import Limits, Rejected, iter_documents, safe_unzip, validate
from syncd.errors import BadInput, ProtocolError

from .factories import cml, doc_xml, requisites_xml, write_file

pytestmark = pytest.mark.usefixtures("feed_size")

XXE = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE КоммерческаяИнформация [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<КоммерческаяИнформация ВерсияСхемы="2.08" ДатаФормирования="2026-11-24T10:15:00">
<Документ><Ид>1</Ид><Номер>1</Номер><Дата>2026-11-24</Дата><Сумма>1</Сумма><Комментарий>&x;</Комментарий></Документ>
</КоммерческаяИнформация>
"""

LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
          + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">\n' for i in range(1, 10))
          + ']>\n<КоммерческаяИнформация ВерсияСхемы="2.08"><Документ><Ид>&lol9;</Ид></Документ>'
          '</КоммерческаяИнформация>\n')


@pytest.mark.parametrize("text", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_any_dtd_is_refused_before_parsing(tmp_path: Path, text: str) -> None:
    path = write_file(tmp_path, "evil.xml", text, "utf-8")
    with pytest.raises(ProtocolError) as e:
        list(iter_documents(path))
    assert "DOCTYPE" in e.value.reason and e.value.line == 2
    assert "root:" not in str(e.value)   # /etc/passwd never read into the message
    with pytest.raises(ProtocolError):
        validate(path)


def test_doctype_after_comments_is_found(tmp_path: Path) -> None:
    text = XXE.replace("\n<!DOCTYPE", "\n<!-- hi -->\n<?pi x?>\n<!DOCTYPE")
    with pytest.raises(ProtocolError, match="DOCTYPE"):
        list(iter_documents(text.encode()))


def test_undefined_entity_rejects_its_record_unexpanded(tmp_path: Path) -> None:
    body = doc_xml("1") + doc_xml("2", extra="<Комментарий>&x;</Комментарий>") + doc_xml("3")
    one, bad, three = iter_documents(cml(body).encode())
    assert (one.id, three.id) == ("1", "3")
    assert isinstance(bad, Rejected) and bad.record_id == "2" and bad.line == 4
    assert "entity" in bad.reason.lower() and "&x;" in bad.raw


def test_truncated_file_yields_complete_documents_then_fails_with_line(tmp_path: Path) -> None:
    text = cml(doc_xml("1") + doc_xml("2") + doc_xml("3"))
    cut = text.index("<Документ><Ид>3") + 40
    path = write_file(tmp_path, "cut.xml", text[:cut], "utf-8")
    got = []
    with pytest.raises(ProtocolError) as e:
        for d in iter_documents(path):
            got.append(d.id)
    assert got == ["1", "2"]
    assert e.value.line == 5 and "truncated" in e.value.reason


def test_wrong_declaration_utf8_but_cp1251_bytes(tmp_path: Path) -> None:
    text = cml(doc_xml("1") + doc_xml("2", extra="<Комментарий>Привет</Комментарий>"), decl="UTF-8")
    path = write_file(tmp_path, "lie.xml", text, "cp1251")
    with pytest.raises(BadInput) as e:
        list(iter_documents(path))
    # the root tag is the first Cyrillic text, on line 2
    assert e.value.line == 2 and "not UTF-8" in e.value.reason and "windows-1251" in e.value.reason


def test_bad_bytes_past_the_sniffed_head(tmp_path: Path) -> None:
    body = "".join(doc_xml(str(i)) for i in range(1, 800)) + doc_xml("x", extra="<Комментарий>@@</Комментарий>")
    data = cml(body, decl="UTF-8").encode().replace(b"@@", "Ой".encode("cp1251"))
    assert len(data) > 64 * 1024
    ids = []
    with pytest.raises(ProtocolError) as e:
        for d in iter_documents(io.BytesIO(data)):
            ids.append(d.id)
    assert len(ids) == 799 and e.value.line == 802 and "encoding" in e.value.reason


def test_declared_cp1251_but_utf8_bytes(tmp_path: Path) -> None:
    text = cml(doc_xml("Заказ"), decl="windows-1251")
    with pytest.raises(ProtocolError, match="UTF-8"):
        list(iter_documents(text.encode("utf-8")))


def test_not_xml_and_wrong_root() -> None:
    with pytest.raises(ProtocolError, match="not XML"):
        list(iter_documents(b"PK\x03\x04 garbage"))
    with pytest.raises(ProtocolError, match="root element"):
        list(iter_documents("<html><Документ><Ид>1</Ид></Документ></html>".encode()))


def test_too_deep_nesting_is_fatal_with_line(tmp_path: Path) -> None:
    deep = "<a>" * 80 + "x" + "</a>" * 80
    body = doc_xml("1") + doc_xml("2", extra=f"<Комментарий>{deep}</Комментарий>")
    out = []
    with pytest.raises(ProtocolError) as e:
        for d in iter_documents(cml(body).encode(), Limits(max_depth=64)):
            out.append(d.id)
    assert out == ["1"] and "deeper than 64" in e.value.reason and e.value.line == 4
    # the parser's own hard limit (256) also ends with a ProtocolError, not a crash
    very = "<a>" * 300 + "</a>" * 300
    with pytest.raises(ProtocolError, match="deep"):
        list(iter_documents(cml(doc_xml("3", extra=very)).encode(), Limits(max_depth=1000)))
    with pytest.raises(ProtocolError, match="deep") as e:      # the default is libxml2's own 256
        list(iter_documents(cml(doc_xml("3", extra=very)).encode()))
    assert e.value.line == 3


def test_text_and_file_size_limits(tmp_path: Path) -> None:
    body = doc_xml("1") + doc_xml("2", extra="<Комментарий>" + "я" * 5000 + "</Комментарий>")
    with pytest.raises(ProtocolError, match="over the limit"):
        list(iter_documents(cml(body).encode(), Limits(max_text=1000)))
    path = write_file(tmp_path, "big.xml", cml(body), "utf-8")
    with pytest.raises(ProtocolError, match="over the limit"):
        list(iter_documents(path, Limits(max_file_size=1000)))
    with pytest.raises(ProtocolError, match="larger than the limit"):
        list(iter_documents(io.BytesIO(cml(body * 20).encode()), Limits(max_file_size=70_000)))


@pytest.mark.parametrize("where", ["comment", "requisite", "item", "after-recovery"])
def test_text_limit_deep_in_a_big_file(where: str) -> None:
    """Texts are measured per record only when the bytes read allow one that long: the limit must
    still catch it wherever it sits, far from the file's start and in any field."""
    long = "я" * 3000
    extra = {"comment": f"<Комментарий>{long}</Комментарий>",
             "requisite": requisites_xml([("Метод оплаты", long)]),
             "item": f"<Товары><Товар><Ид>t</Ид><Наименование>{long}</Наименование></Товар></Товары>",
             "after-recovery": f"<Комментарий>{long}</Комментарий>"}[where]
    docs = [doc_xml(str(i)) for i in range(1500)]
    if where == "after-recovery":
        docs[100] = doc_xml("100", extra="<Комментарий>\x01</Комментарий>")
    docs[1200] = doc_xml("1200", extra=extra)
    seen = []
    with pytest.raises(ProtocolError, match="over the limit of 2000") as e:
        for d in iter_documents(cml("".join(docs)).encode(), Limits(max_text=2000)):
            seen.append(d)
    assert len(seen) == 1200 and e.value.line == 1203
    assert sum(isinstance(d, Rejected) for d in seen) == (where == "after-recovery")


def test_one_bad_document_among_good_ones(tmp_path: Path) -> None:
    body = "".join(doc_xml(str(i), total="12,5" if i != 3 else "12..5") for i in range(1, 6))
    out = list(iter_documents(cml(body).encode()))
    assert [getattr(o, "id", None) for o in out] == ["1", "2", None, "4", "5"]
    assert isinstance(out[2], Rejected) and out[2].line == 5 and out[2].record_id == "3"


# ---- zip -----------------------------------------------------------------------------------------

def _zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_zip_ok(tmp_path: Path) -> None:
    data = _zip({"import.xml": cml(doc_xml("1")).encode(), "import_files/ab/abcd.jpg": b"\xff\xd8jpeg"})
    files = safe_unzip(data, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == [
        "import.xml", "import_files/ab/abcd.jpg"]


def test_zip_bomb_is_stopped_while_inflating(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("orders.xml", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(200):
                f.write(chunk)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(ProtocolError, match="zip bomb"):
        safe_unzip(bomb, tmp_path / "out")
    assert not (tmp_path / "out" / "orders.xml").exists()
    # a total-size cap is enforced on the inflated bytes too, whatever the ratio allows
    with pytest.raises(ProtocolError, match="zip bomb"):
        safe_unzip(bomb, tmp_path / "out2", Limits(max_zip_ratio=1e9, max_unzipped_size=50 << 20))


def test_zip_lying_header_does_not_help(tmp_path: Path) -> None:
    data = bytearray(_zip({"a.xml": b"<x/>" * 100_000}))
    # patch the central directory's uncompressed size to a small value
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    with pytest.raises(ProtocolError):
        safe_unzip(bytes(data), tmp_path / "out")


@pytest.mark.parametrize("name", ["../evil.xml", "/etc/cron.d/x", "a/../../b.xml", "C:/x.xml",
                                  "..\\evil.xml"])
def test_zip_traversal_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ProtocolError, match="escapes"):
        safe_unzip(_zip({name: b"x"}), tmp_path / "out")
    assert not (tmp_path / "evil.xml").exists()


@pytest.mark.parametrize("name", ["shell.php", "x/y.PHTML", ".htaccess", "run.sh"])
def test_zip_script_extension_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ProtocolError, match="refused extension"):
        safe_unzip(_zip({name: b"<?php system($_GET[1]);"}), tmp_path / "out")


def test_zip_symlink_and_member_count(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("link.xml")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(ProtocolError, match="symlink"):
        safe_unzip(buf.getvalue(), tmp_path / "out")
    many = _zip({f"f{i}.xml": b"x" for i in range(20)})
    with pytest.raises(ProtocolError, match="members"):
        safe_unzip(many, tmp_path / "out2", Limits(max_zip_members=10))
    with pytest.raises(ProtocolError, match="not a zip"):
        safe_unzip(b"not a zip", tmp_path / "out3")
    assert not os.path.exists(tmp_path / "out" / "link.xml")
