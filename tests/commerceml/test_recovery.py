"""One damaged record costs that record: it is rejected whole, the records after it are read.

The property tests build files of N good records (writer output, indented as 1C and Bitrix write
them), damage one record at a random place in a random way, and expect N-1 records equal to the
originals plus one `Rejected` holding exactly the damaged text, its line, its Ид and its kind.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree

from syncd.commerceml import (Document, Group, Limits, Rejected, check_files, document_element,
                              iter_catalog, iter_documents, iter_records)
from syncd.commerceml import pull as pull_module
from syncd.commerceml import reader as reader_module
from syncd.commerceml.pull import Pull
from syncd.errors import ProtocolError

from .factories import (BOM, NS_1C, cml, doc_xml, order, record_text, records_file, sample_records,
                        write_file)

pytestmark = pytest.mark.usefixtures("feed_size")

KIND_NAME = {"Документ": "order", "Контрагент": "counterparty", "Товар": "product",
             "Предложение": "offer", "Группа": "group"}
DAMAGE = ["\x01", "\x0b", "\x00", "<", "&", "]]>", "<!--", "<![CDATA[", "/", '"', ">", "=", "<a>", "</a>"]
ENCODINGS = [("windows-1251", "cp1251", False), ("UTF-8", "utf-8", False), ("UTF-8", "utf-8", True)]


@st.composite
def damaged(draw: st.DrawFn, text: str) -> str:
    """`text` with one insertion, deletion, replacement or cut somewhere inside it."""
    op = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
    if op == "insert":
        p = draw(st.integers(1, len(text) - 1))
        return text[:p] + draw(st.sampled_from(DAMAGE)) + text[p:]
    p = draw(st.integers(0, len(text) - 1))
    if op == "delete":
        return text[:p] + text[p + 1:]
    if op == "replace":
        return text[:p] + draw(st.sampled_from(DAMAGE)) + text[p + 1:]
    return text[:p] + text[p + draw(st.integers(2, 40)):]


def well_formed(text: str, namespace: str | None) -> bool:
    ns = f' xmlns="{namespace}"' if namespace else ""
    try:
        etree.fromstring(f"<r{ns}>{text}</r>".encode())
        return True
    except etree.XMLSyntaxError:
        return False


def encoded(text: str, codec: str, bom: bool) -> bytes:
    return (BOM if bom else b"") + text.encode(codec)


def first_id(text: str) -> str | None:
    m = re.match(r"<[^<>]*>\s*<Ид>([^<]*)</Ид>", text)
    return m.group(1) if m else None


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data(), kind=st.sampled_from(["Документ", "Контрагент", "Товар", "Предложение"]),
       n=st.integers(1, 5), enc=st.sampled_from(ENCODINGS), container=st.booleans(),
       namespace=st.sampled_from([None, NS_1C]))
def test_one_damaged_record_is_rejected_whole_and_the_rest_is_read(
        data: st.DataObject, kind: str, n: int, enc: tuple, container: bool, namespace: str | None) -> None:
    objs, texts = sample_records(kind, n)
    bad = data.draw(st.integers(0, n - 1), label="bad")
    broken = data.draw(damaged(texts[bad]), label="broken")
    assume(broken.strip() == broken and not well_formed(broken, namespace))
    # "<Документ/>" is a whole (empty) record to lxml, rejected on its own before the damage shows
    assume(not broken.startswith(f"<{kind}/>"))
    texts[bad] = "\x00MARK\x00"
    decl, codec, bom = enc
    start = records_file(kind, texts, container=container, namespace=namespace, decl=decl).index("\x00MARK")
    texts[bad] = broken
    text = records_file(kind, texts, container=container, namespace=namespace, decl=decl)

    out = list(iter_records(encoded(text, codec, bom), (kind,)))

    assert [o for o in out if not isinstance(o, Rejected)] == objs[:bad] + objs[bad + 1:]
    (rej,) = [o for o in out if isinstance(o, Rejected)]
    assert out.index(rej) == bad
    assert rej.raw == broken and rej.kind == KIND_NAME[kind]
    first = text.count("\n", 0, start) + 1
    assert first <= rej.line <= first + broken.count("\n"), rej.reason
    if first_id(broken) == first_id(sample_records(kind, n)[1][bad]):
        assert rej.record_id == objs[bad].id
    assert rej.reason.startswith("not well-formed XML in <")


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data(), kind=st.sampled_from(["Документ", "Контрагент", "Товар", "Предложение", "Группа"]),
       n=st.integers(1, 4), enc=st.sampled_from(ENCODINGS))
def test_damage_on_one_line_files_never_loses_or_invents_a_record(
        data: st.DataObject, kind: str, n: int, enc: tuple) -> None:
    """Files written on one line give the splitter no columns; every record still comes out
    intact or inside a Rejected, or the file is refused as a whole."""
    objs, texts = sample_records(kind, n, pretty=False)
    bad = data.draw(st.integers(0, n - 1), label="bad")
    broken = data.draw(damaged(texts[bad]), label="broken")
    assume(not well_formed(broken, None))
    texts[bad] = broken
    decl, codec, bom = enc
    out: list = []
    try:
        for obj in iter_records(encoded(records_file(kind, texts, decl=decl).replace("\n", ""), codec, bom),
                                (kind,)):
            out.append(obj)
    except ProtocolError:
        assert kind == "Группа"          # a lost tag inside a group tree can close it early for lxml
        return
    good = [o for o in out if not isinstance(o, Rejected)]
    raws = "".join(o.raw for o in out if isinstance(o, Rejected))
    assert all(g in objs for g in good)
    assert all(o in good or t.strip() in raws for o, t in zip(objs, texts))


@pytest.mark.parametrize("where", [0, 2, 4])
@pytest.mark.parametrize("decl,codec,bom", ENCODINGS)
@pytest.mark.parametrize("container", [False, True])
def test_control_character_in_first_middle_last_document(where: int, decl: str, codec: str, bom: bool,
                                                         container: bool) -> None:
    objs, texts = sample_records("Документ", 5)
    texts[where] = texts[where].replace("Позвонить", "Позво\x01нить") if "Позвонить" in texts[where] else \
        texts[where].replace("<Роль>", "<Роль>\x01")
    text = records_file("Документ", texts, container=container, decl=decl)
    out = list(iter_documents(encoded(text, codec, bom)))
    assert [o.id for o in out if isinstance(o, Document)] == [o.id for i, o in enumerate(objs) if i != where]
    rej = out[where]
    assert isinstance(rej, Rejected) and rej.record_id == f"Заказ-{where}" and rej.raw == texts[where]
    assert "Char value 1" in rej.reason
    assert rej.line == text.count("\n", 0, text.index("\x01")) + 1


def test_prefixed_namespace_and_the_error_line_inside_the_record() -> None:
    docs = [doc_xml(str(i)).strip().replace("<", "<cml:").replace("<cml:/", "</cml:") for i in range(3)]
    docs[1] = docs[1].replace("<cml:Сумма>", "\n\n<cml:Сумма>&нет;")
    body = "".join(d + "\n" for d in docs)
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<cml:КоммерческаяИнформация xmlns:cml="{NS_1C}" ВерсияСхемы="2.10">\n{body}'
            "</cml:КоммерческаяИнформация>\n")
    one, bad, two = iter_documents(text.encode())
    assert (one.id, two.id) == ("0", "2")
    assert isinstance(bad, Rejected) and bad.record_id == "1" and bad.raw == docs[1]
    assert bad.line == 6 and "нет" in bad.reason       # the entity's line, two lines below <Документ>


def test_raw_is_the_whole_record_past_4_kib() -> None:
    big = order("big", items=tuple(order().items[0].__class__(**{**order().items[0].__dict__,
                                                                 "id": f"item-{k}"}) for k in range(60)))
    good = record_text(document_element(big))
    assert len(good) > 4096 * 4
    damaged_text = good.replace("item-59", "item-59\x01")
    content_bad = good.replace("<Сумма>", "<Сумма>сто ", 1)
    text = records_file("Документ", [damaged_text, content_bad, good])
    syntax, content, fine = iter_documents(text.encode())
    assert isinstance(syntax, Rejected) and syntax.raw == damaged_text
    assert isinstance(content, Rejected) and "not a number" in content.reason
    whole = etree.fromstring(content.raw.encode())            # the whole record, re-serialized
    assert len(whole.find("Товары")) == 60 and "сто" in whole.findtext("Сумма")
    assert fine == big


def test_two_damaged_records_far_apart_keep_their_lines() -> None:
    texts = [doc_xml(str(i)).strip() for i in range(400)]
    texts[10] = texts[10].replace("<Роль>", "<Роль>\x02")
    texts[300] = texts[300].replace("</Документ>", "</Документ")
    texts[350] = texts[350].replace("<Сумма>5880.00", "<Сумма>много")   # bad content after resuming
    text = records_file("Документ", texts, container=True)
    out = list(iter_documents(text.encode()))
    rejected = [o for o in out if isinstance(o, Rejected)]
    assert [r.record_id for r in rejected] == ["10", "300", "350"]
    assert len(out) == 400
    for r in rejected:
        assert r.line == text.count("\n", 0, text.index(f"<Ид>{r.record_id}</Ид>")) + 1
    assert rejected[1].raw == texts[300] and "много" in rejected[2].raw


@pytest.mark.parametrize("lost", ["</Документ>", "<Документ>"])
def test_lost_end_tag_or_lost_start_tag(lost: str) -> None:
    texts = [doc_xml(str(i)).strip() for i in range(3)]
    texts[1] = texts[1].replace(lost, "")
    out = list(iter_documents(records_file("Документ", texts).encode()))
    assert [type(o).__name__ for o in out] == ["Document", "Rejected", "Document"]
    assert out[1].raw == texts[1] and out[1].record_id == "1" and out[1].line == 4


def test_on_error_takes_damaged_records_too() -> None:
    texts = [doc_xml(str(i)).strip() for i in range(3)]
    texts[1] = texts[1].replace("<Роль>", "<Роль>\x01")
    seen: list[Rejected] = []
    ids = [d.id for d in iter_documents(records_file("Документ", texts).encode(), on_error=seen.append)]
    assert ids == ["0", "2"] and [r.record_id for r in seen] == ["1"]


def test_damaged_nested_group_rejects_its_whole_tree() -> None:
    objs, texts = sample_records("Группа", 3)
    texts[1] = texts[1].replace("<Наименование>Белые", "<Наименование>Бе\x01лые")
    out = list(iter_catalog(records_file("Группа", texts).encode()))
    assert [type(o) for o in out] == [Group, Rejected, Group]
    assert out[1].raw == texts[1] and out[1].record_id == "g1" and out[1].kind == "group"
    texts[1] = texts[1].replace("<Группы>\n    <Группа>", "<Группы>\n    <Груп па>")
    out = list(iter_catalog(records_file("Группа", texts).encode()))
    assert [o.id if isinstance(o, Group) else o.raw for o in out] == ["g0", texts[1], "g2"]


@pytest.mark.parametrize("how", ["path", "bytes", "bytesio", "file"])
def test_every_seekable_source_recovers(tmp_path: Path, how: str) -> None:
    texts = [doc_xml(str(i)).strip() for i in range(3)]
    texts[1] = texts[1].replace("<Роль>", "<Роль>\x01")
    data = records_file("Документ", texts, decl="windows-1251").encode("cp1251")
    path = write_file(tmp_path, "o.xml", "", "utf-8")
    path.write_bytes(b"junk before" + data)
    if how == "path":
        path.write_bytes(data)
        source: object = path
    elif how == "bytes":
        source = data
    elif how == "bytesio":
        source = io.BytesIO(b"junk before" + data)
        source.seek(11)
    else:
        source = open(path, "rb")
        source.seek(11)
    try:
        out = list(iter_documents(source))   # type: ignore[arg-type]
    finally:
        if how == "file":
            source.close()                    # type: ignore[union-attr]
    assert [type(o).__name__ for o in out] == ["Document", "Rejected", "Document"]
    assert out[1].raw == texts[1]


def test_a_one_way_stream_is_kept_on_disk_and_recovers_like_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [doc_xml(str(i)).strip() for i in range(3)]
    texts[1] = texts[1].replace("<Роль>", "<Роль>\x01")
    data = records_file("Документ", texts).encode()

    class OneWay(io.RawIOBase):
        def __init__(self) -> None:
            self._b = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:   # type: ignore[no-untyped-def]
            return self._b.readinto(b)

    spools: list = []
    real = tempfile.TemporaryFile

    def spy(*a, **kw):  # type: ignore[no-untyped-def]
        spools.append(real(*a, **kw))
        return spools[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", spy)
    out = list(iter_documents(OneWay()))
    assert [getattr(o, "id", None) for o in out] == ["0", None, "2"]
    assert out[1].raw == texts[1] and out[1].line == 4 and out[1].record_id == "1"
    assert len(spools) == 1 and spools[0].closed      # the copy is gone when reading ends


class _Forgetful(Pull):
    """A parser binding that reports nothing of the chunk it failed in (lxml 6.2's iterparse)."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        batch: list = []
        for ev in super().__iter__():
            batch.append(ev)
            if self.error is None:
                yield from batch
                batch = []


@pytest.mark.parametrize("feed", [5, 300, 1 << 16])
def test_records_the_parser_did_not_report_before_its_error_come_from_the_bytes(
        monkeypatch: pytest.MonkeyPatch, feed: int) -> None:
    monkeypatch.setattr(reader_module, "Pull", _Forgetful)
    monkeypatch.setattr(pull_module, "FEED_SIZE", feed)
    texts = [doc_xml(str(i)).strip() for i in range(40)]
    texts[30] = texts[30].replace("<Роль>", "<Роль>\x01")
    out = list(iter_documents(records_file("Документ", texts).encode()))
    assert [getattr(o, "id", None) for o in out] == [str(i) for i in range(30)] + [None] + \
        [str(i) for i in range(31, 40)]
    body = "<Контейнер>\n" + doc_xml("1") + "\x01\n" + doc_xml("2") + "</Контейнер>\n"
    assert [getattr(o, "id", None) for o in iter_documents(cml(body).encode())] == ["1", None, "2"]


def test_what_cannot_be_split_still_ends_the_file() -> None:
    texts = [doc_xml(str(i)).strip() for i in range(3)]
    texts[0] = texts[0].replace("<Роль>", "<Роль>\x01")
    # truncated inside a record, after a damaged one
    text = records_file("Документ", texts)
    cut = text[:text.index("<Ид>2</Ид>") + 12]
    got = []
    with pytest.raises(ProtocolError, match="truncated"):
        for o in iter_documents(cut.encode()):
            got.append(o)
    assert [type(o).__name__ for o in got] == ["Rejected", "Document"]
    # a damaged root start tag
    bad_root = text.replace('ВерсияСхемы="2.08"', 'ВерсияСхемы="2.08', 1)
    with pytest.raises(ProtocolError):
        list(iter_documents(bad_root.encode()))
    # content after the root element
    with pytest.raises(ProtocolError):
        list(iter_documents((records_file("Документ", texts[1:]) + "<Документ>").encode()))


def test_recovery_keeps_the_safety_limits() -> None:
    # a DOCTYPE or an external entity inside a record is rejected with that record, never read
    evil = doc_xml("2", extra='<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Комментарий>&e;</Комментарий>')
    out = list(iter_documents(cml(doc_xml("1") + evil + doc_xml("3")).encode()))
    assert [type(o).__name__ for o in out] == ["Document", "Rejected", "Document"]
    assert "root:" not in out[1].raw and "root:" not in out[1].reason
    # a damaged record deeper than the depth limit ends the file
    deep = "<a>" * 80 + "\x01" + "</a>" * 80
    with pytest.raises(ProtocolError, match="deeper than 64"):
        list(iter_documents(cml(doc_xml("1") + doc_xml("2", extra=deep) + doc_xml("3")).encode(),
                            Limits(max_depth=64)))
    very = "<a>" * 300 + "\x01" + "</a>" * 300        # past libxml2's own 256: never a Rejected
    with pytest.raises(ProtocolError, match="deep"):
        list(iter_documents(cml(doc_xml("1") + doc_xml("2", extra=very) + doc_xml("3")).encode()))
    # a damaged record larger than max_record ends the file
    huge = doc_xml("2", extra="<Комментарий>" + "я" * 5000 + "\x01</Комментарий>")
    with pytest.raises(ProtocolError, match="runs past 2000 bytes"):
        list(iter_documents(cml(doc_xml("1") + huge.replace("</Документ>", "") + doc_xml("3")).encode(),
                            Limits(max_record=2000)))



def test_damage_between_records_does_not_cost_a_record() -> None:
    body = "<Контейнер>\n" + doc_xml("1") + "\x01\n" + doc_xml("2") + "</Контейнер>\n"
    out = list(iter_documents(cml(body).encode()))
    assert [getattr(o, "id", None) for o in out] == ["1", None, "2"]
    assert isinstance(out[1], Rejected) and out[1].raw == "\x01" and out[1].line == 5


def test_check_lists_the_records_of_a_damaged_file(tmp_path: Path) -> None:
    texts = [doc_xml(str(i)).strip() for i in range(3)]
    texts[1] = texts[1].replace("<Роль>", "<Роль>\x01")
    path = write_file(tmp_path, "o.xml", records_file("Документ", texts), "utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert check_files([str(path)], out, err=err) == 1
    kinds = [json.loads(x)["kind"] for x in out.getvalue().splitlines()]
    assert kinds == ["order", "rejected", "order"]
    assert f"{path}: line 4: record 1: not well-formed XML" in err.getvalue()
