"""XSD validation with line numbers, and `check_files` output and exit codes."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from syncd.commerceml import (Group, Offer, Price, PriceType, Product, Property, Stock, Warehouse,
                              check_files, validate, write_catalog, write_offers, write_orders)

from .factories import cml, doc_xml, order, person, write_file
from .test_reader import CATALOG, EXAMPLE, OFFERS


def test_reference_example_and_our_output_are_valid(tmp_path: Path) -> None:
    assert validate(EXAMPLE) == []
    buf = io.BytesIO()
    write_orders(buf, [order("1"), order("2", buyer=person())], container=True)
    assert validate(buf.getvalue()) == []
    good_catalog = CATALOG.replace("<Товар><Наименование>без Ид</Наименование></Товар>", "")
    assert validate(cml(good_catalog + OFFERS).encode()) == []
    (issue,) = validate(cml(CATALOG).encode())
    assert issue.line == 21 and "Ид" in issue.message


def test_written_catalog_and_offers_are_valid(tmp_path: Path) -> None:
    cat, off = tmp_path / "import.xml", tmp_path / "offers.xml"
    write_catalog(cat, [Product("t1", "A-1", "Кружка", groups=("g1",), property_values=(("p1", "v"),),
                                requisites=(("Вес", "1"),)), Product("t2", name="Старое", deleted=True)],
                  groups=[Group("g1", "Посуда", (Group("g2", "Кружки"),))],
                  properties=[Property("p1", "Цвет", "Справочник", (("v", "Белый"),))])
    write_offers(off, [Offer("t1", prices=(Price("pt", __import__("decimal").Decimal("1.50")),),
                             stocks=(Stock("w1", None),))],
                 price_types=[PriceType("pt", "Розница", "RUB")], warehouses=[Warehouse("w1", "Склад")],
                 rests_form=True)
    assert validate(cat) == [] and validate(off) == []


def test_unknown_vendor_elements_are_accepted() -> None:
    extra = "<ДопИнфо><Что-то>1</Что-то></ДопИнфо><Налоги><Налог><Наименование>НДС</Наименование></Налог></Налоги>"
    assert validate(cml(doc_xml("1", extra=extra)).encode()) == []


def test_missing_required_element_reports_the_line() -> None:
    body = doc_xml("1") + doc_xml("2").replace("<Номер>2</Номер>", "") + doc_xml("3", total="abc")
    issues = validate(cml(body).encode())
    assert [i.line for i in issues] == [4, 5]
    assert "Номер" in issues[0].message and issues[0].path.endswith("Документ[2]")
    assert "Сумма" in (issues[1].path or "") or "abc" in issues[1].message


def test_root_attributes_are_required() -> None:
    text = cml(doc_xml("1")).replace(' ДатаФормирования="2026-11-24T10:15:00"', "")
    issues = validate(text.encode())
    assert issues and issues[0].line == 2 and "ДатаФормирования" in issues[0].message


def test_check_files_prints_json_lines(tmp_path: Path, capsys) -> None:
    orders = tmp_path / "orders.xml"
    write_orders(orders, [order("1"), order("2")])
    cat = write_file(tmp_path, "import.xml", cml(CATALOG.replace("<Товар><Наименование>без Ид</Наименование></Товар>", "")), "utf-8")
    out = io.StringIO()
    assert check_files([str(orders), str(cat)], out) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    first = lines[0]
    assert first["file"] == str(orders) and first["kind"] == "order" and first["id"] == "1"
    assert first["total"] == "5880.00" and first["date"] == "2026-11-24T10:12:31+03:00"
    assert first["items"][0]["price"] == "490.00"
    assert [x["kind"] for x in lines[2:]] == ["group", "group", "property", "product", "product", "product"]


def test_check_files_errors_and_exit_codes(tmp_path: Path) -> None:
    bad = write_file(tmp_path, "bad.xml", cml(doc_xml("1") + doc_xml("2").replace("<Номер>2</Номер>", "")), "utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert check_files([str(bad)], out, err=err) == 1
    assert f"{bad}: line 4:" in err.getvalue()
    assert len(out.getvalue().splitlines()) == 2      # still dumped: the schema is stricter than the reader
    evil = write_file(tmp_path, "evil.xml", '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "b">]><x/>', "utf-8")
    err = io.StringIO()
    assert check_files([str(evil)], io.StringIO(), err=err) == 1 and "line 2" in err.getvalue()
    err = io.StringIO()
    assert check_files([str(tmp_path / "missing.xml"), str(bad)], io.StringIO(), err=err) == 2
    assert "cannot read" in err.getvalue()


def test_check_files_reads_zip(tmp_path: Path) -> None:
    z = tmp_path / "exchange.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        f.writestr("import.xml", cml(doc_xml("7")).encode())
        f.writestr("offers.xml", cml(OFFERS).encode())
    out = io.StringIO()
    assert check_files([str(z)], out) == 0
    kinds = [json.loads(x)["kind"] for x in out.getvalue().splitlines()]
    assert kinds == ["order", "price_type", "warehouse", "warehouse", "offer", "offer"]
    assert json.loads(out.getvalue().splitlines()[0])["file"] == f"{z}!import.xml"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as f:
        f.writestr("../x.xml", b"<x/>")
    err = io.StringIO()
    assert check_files([str(evil)], io.StringIO(), err=err) == 1 and "escapes" in err.getvalue()


def test_check_files_streams_large_files_without_schema_pass(tmp_path: Path) -> None:
    path = write_file(tmp_path, "big.xml", cml(doc_xml("1") + doc_xml("2", total="x")), "utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert check_files([str(path)], out, err=err, max_validate_size=10) == 1
    assert "validation skipped" in err.getvalue() and "line 4: record 2" in err.getvalue()
    assert [json.loads(x)["kind"] for x in out.getvalue().splitlines()] == ["order", "rejected"]


def test_1c_namespace_validates_and_header_reads() -> None:
    from syncd.commerceml import read_header
    data = cml(doc_xml("1"), namespace="urn:1C.ru:commerceml_2", version="2.10").encode()
    assert validate(data) == []
    h = read_header(data)
    assert h.schema_version == "2.10" and h.section == "Документ" and h.generated_at.hour == 10
