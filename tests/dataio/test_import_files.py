"""Import files: encodings, delimiters, XLSX, and every bad input refused with file and row."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from engine.dataio.importing.readers import ImportFileError, detect_encoding, open_table

from .import_kit import records, run_import, site, write_csv  # noqa: F401 - site is a fixture

ROWS = [["客户名称", "城市", "Note"], ["北京科技有限公司", "北京", "Ünïcödé café"], ["上海贸易股份有限公司", "上海", "naïve"]]


@pytest.mark.parametrize("encoding, expected", [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"),
                                                ("gb18030", "gb18030"), ("gbk", "gb18030")])
def test_chinese_files_in_each_encoding_are_detected(tmp_path, encoding, expected):
    rows = [r[:2] for r in ROWS]
    path = write_csv(tmp_path / "a.csv", rows, encoding=encoding)
    table = open_table(path)
    assert table.encoding == expected
    assert table.headers == ["客户名称", "城市"]
    assert [v for _, v in table.rows()] == rows[1:]


def test_latin1_is_detected(tmp_path):
    rows = [["Name", "City"], ["Müller GmbH", "Köln"], ["Café Crème", "Besançon"], ["Straße", "Düsseldorf"]]
    path = write_csv(tmp_path / "a.csv", rows, encoding="latin-1")
    table = open_table(path)
    assert [v for _, v in table.rows()] == rows[1:]


def test_encoding_and_delimiter_can_be_given(tmp_path):
    path = write_csv(tmp_path / "a.csv", [["a", "b"], ["é", "x"]], encoding="latin-1", delimiter=";")
    table = open_table(path, encoding="cp1252", delimiter=";")
    assert (table.headers, list(table.rows())) == (["a", "b"], [(2, ["é", "x"])])


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiters_are_sniffed(tmp_path, delimiter):
    path = write_csv(tmp_path / "a.csv", [["name", "city", "n"], ["A, Inc", "X", "1,5"], ["B", "Y", "2"]],
                     delimiter=delimiter)
    table = open_table(path)
    assert table.delimiter == delimiter and table.headers == ["name", "city", "n"]


def test_a_gb18030_file_imports_into_accounts(crm, tmp_path):
    path = write_csv(tmp_path / "客户.csv", [["客户名称", "类型"], ["北京科技有限公司", "正式客户"]], encoding="gb18030")
    job = run_import(crm, path, "account")
    assert job["created"] == 1 and records(crm, "account")[0]["name"] == "北京科技有限公司"


def test_xlsx_typed_cells_first_or_named_sheet(site, tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Ignored"
    sheet.append(["x"])
    visits = book.create_sheet("拜访")
    visits.append(["主题", "金额", "拜访日期", "完成", "编码"])
    visits.append(["a", 12.5, datetime(2026, 3, 1), True, 42])
    visits.append([None, None, None, None, None])   # an empty row is skipped
    visits.append(["b", 3, date(2026, 3, 2), False, "B-1"])
    path = tmp_path / "v.xlsx"
    book.save(path)
    job = run_import(site, path, "visit", sheet="拜访")
    assert (job["created"], job["failed"]) == (2, 0), job
    a, b = records(site, "visit")
    assert (str(a["amount"]), a["visited_on"], a["done"], a["code"]) == ("12.50", date(2026, 3, 1), True, "42")
    assert (b["visited_on"], b["done"], b["code"]) == (date(2026, 3, 2), False, "B-1")
    with pytest.raises(ImportFileError, match="no sheet 'Nope'"):
        open_table(path, sheet="Nope")


def test_bad_files_are_refused_naming_file_and_row(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportFileError, match="empty.csv: the file is empty"):
        open_table(empty)
    headers = write_csv(tmp_path / "headers.csv", [["name", "city"]])
    with pytest.raises(ImportFileError, match="headers.csv: the file has headers but no data rows"):
        open_table(headers)
    binary = tmp_path / "photo.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(ImportFileError, match="photo.csv: this is not a text file"):
        open_table(binary)
    twice = write_csv(tmp_path / "twice.csv", [["name", "city", "Name"], ["a", "b", "c"]])
    with pytest.raises(ImportFileError, match=r"twice.csv, row 1: the header 'Name' is given twice \(columns 1 and 3\)"):
        open_table(twice)
    big = write_csv(tmp_path / "big.csv", [["name"], *[["x" * 100]] * 20])
    with pytest.raises(ImportFileError, match="big.csv: the file has 2,025 bytes, more than the 1,000 allowed"):
        open_table(big, max_bytes=1000)
    wide = write_csv(tmp_path / "wide.csv", [["name"], ["a"], ["b", "extra"]])
    with pytest.raises(ImportFileError, match="wide.csv, row 3: 2 values but only 1 headers"):
        list(open_table(wide).rows())
    fake = tmp_path / "fake.xlsx"
    fake.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ImportFileError, match="fake.xlsx: not a readable XLSX workbook"):
        open_table(fake)
    with pytest.raises(ImportFileError, match="unknown encoding 'klingon'"):
        open_table(headers, encoding="klingon")


def test_a_wrong_encoding_names_the_row(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("name\nok\n".encode() + "北京\n".encode("gb18030"))
    with pytest.raises(ImportFileError, match=r"a.csv, row 3: not readable as utf-8"):
        list(open_table(path, encoding="utf-8").rows())


def test_detect_encoding_of_a_cut_multibyte_sample():
    sample = ("名" * 10).encode()[:-1]   # the sample ends inside a character
    assert detect_encoding("x", sample) == "utf-8"


def test_memory_stays_flat_the_file_is_streamed(crm, tmp_path):
    import tracemalloc

    path = tmp_path / "many.csv"
    with path.open("w") as f:
        f.write("name,account_number\n")
        for i in range(60000):
            f.write(f"Company {i} with a long enough name to weigh,{i}\n")
    table = open_table(path)
    tracemalloc.start()
    count = sum(1 for _ in table.rows())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 60000 and peak < 2_000_000   # the file is ~3.5 MB
