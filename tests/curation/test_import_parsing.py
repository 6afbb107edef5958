"""The passage-file parser on plain bytes: no database. Every error names its line."""
from __future__ import annotations

import codecs
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.imports import ImportFileError, RowError, check_content, format_for, parse_file


def jsonl(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode("utf-8")


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def errors_of(parsed) -> list[tuple]:
    return [(e.line, e.field, e.error) for e in parsed.errors]


# Formats ----------------------------------------------------------------------


@pytest.mark.parametrize("name, fmt", [("a.jsonl", "jsonl"), ("A.CSV", "csv"), ("x.y.parquet", "parquet"),
                                       ("lines.ndjson", "jsonl")])
def test_the_extension_names_the_format(name, fmt):
    assert format_for(name) == fmt


@pytest.mark.parametrize("name", ["passages.txt", "passages", "passages.json", "../../etc/passwd", ""])
def test_an_unsupported_extension_is_refused_with_what_is_accepted(name):
    with pytest.raises(ImportFileError, match=r"unsupported file type.*\.jsonl, \.csv or \.parquet"):
        format_for(name)


def test_an_empty_file_is_refused():
    with pytest.raises(ImportFileError, match="the file is empty"):
        parse_file("jsonl", b"", max_rows=10)


def test_a_file_of_blank_lines_has_no_rows():
    with pytest.raises(ImportFileError, match="no rows"):
        parse_file("jsonl", b"\n  \n\r\n", max_rows=10)


# JSONL ------------------------------------------------------------------------


def test_good_jsonl_rows_keep_their_line_numbers_past_blank_lines_bom_and_crlf():
    data = codecs.BOM_UTF8 + b'{"text": "One.", "title": "T1"}\r\n\r\n{"text": "Two."}\n{"text": "Three", "title": null}'
    parsed = parse_file("jsonl", data, max_rows=10)
    assert [(r.line, r.text, r.title) for r in parsed.rows] == [(1, "One.", "T1"), (3, "Two.", ""), (4, "Three", "")]
    assert parsed.errors == [] and parsed.total == 3


def test_a_malformed_json_line_is_named_and_the_others_still_parse():
    parsed = parse_file("jsonl", jsonl({"text": "ok"}, '{"text": "broken', {"text": "fine"}), max_rows=10)
    assert [r.line for r in parsed.rows] == [1, 3]
    [(line, field, error)] = errors_of(parsed)
    assert line == 2 and field is None and error.startswith("is not valid JSON: Unterminated string")


@pytest.mark.parametrize("value, kind", [("[1, 2]", "an array"), ('"just text"', "a string"), ("42", "a number"),
                                         ("null", "null")])
def test_valid_json_that_is_not_an_object_is_named(value, kind):
    parsed = parse_file("jsonl", jsonl({"text": "ok"}, value), max_rows=10)
    assert errors_of(parsed) == [(2, None, f'must be a JSON object with a "text" field, not {kind}')]


def test_json_nested_too_deeply_is_an_error_not_a_crash():
    parsed = parse_file("jsonl", jsonl("[" * 100_000 + "]" * 100_000), max_rows=10)
    assert errors_of(parsed) == [(1, None, "is not valid JSON: nested too deeply")]


def test_missing_empty_and_wrongly_typed_fields_name_the_field():
    parsed = parse_file("jsonl", jsonl(
        {"title": "no text"}, {"text": "   "}, {"text": 7}, {"text": ["a"]}, {"text": "ok", "title": 3},
        {"text": "good"},
    ), max_rows=10)
    assert errors_of(parsed) == [
        (1, "text", "is missing"),
        (2, "text", "is empty"),
        (3, "text", "must be a string, not a number"),
        (4, "text", "must be a string, not an array"),
        (5, "title", "must be a string or null, not a number"),
    ]
    assert [r.line for r in parsed.rows] == [6]


def test_unknown_fields_are_ignored_and_named_once():
    parsed = parse_file("jsonl", jsonl({"text": "a", "source": "x", "id": 1}, {"text": "b", "id": 2}), max_rows=10)
    assert len(parsed.rows) == 2 and parsed.ignored_columns == ["source", "id"]


def test_a_line_that_is_not_utf8_is_named_and_the_others_still_parse():
    data = jsonl({"text": "Grüße"}) + b'{"text": "caf\xe9"}\n' + jsonl({"text": "fine"})
    parsed = parse_file("jsonl", data, max_rows=10)
    assert [r.text for r in parsed.rows] == ["Grüße", "fine"]
    [(line, field, error)] = errors_of(parsed)
    assert (line, field) == (2, None) and "is not valid UTF-8 (byte 0xe9" in error


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_utf16_or_utf32_file_is_refused_as_a_whole_with_the_fix(encoding):
    data = '{"text": "hello"}\n'.encode(encoding)
    with pytest.raises(ImportFileError, match=r"UTF-(16|32).*save it as UTF-8"):
        parse_file("jsonl", data, max_rows=10)


def test_binary_content_in_a_text_file_is_refused():
    with pytest.raises(ImportFileError, match="NUL bytes"):
        check_content("jsonl", b'{"text": "a"}\n\x89PNG\x00\x00\x00\rIHDR')


def test_more_rows_than_the_limit_is_refused_as_a_whole():
    with pytest.raises(ImportFileError, match="more than 3 rows"):
        parse_file("jsonl", jsonl(*[{"text": str(n)} for n in range(4)]), max_rows=3)


# CSV --------------------------------------------------------------------------


def test_csv_rows_are_numbered_from_the_header_as_line_1_and_a_multiline_record_by_its_first_line():
    data = b'title,text\nT1,One\n"T2","Two\nlines"\n\nT3,"Three, with a comma"\n'
    parsed = parse_file("csv", data, max_rows=10)
    assert [(r.line, r.title, r.text) for r in parsed.rows] == [
        (2, "T1", "One"), (3, "T2", "Two\nlines"), (6, "T3", "Three, with a comma")]


def test_a_csv_without_a_text_column_names_the_header_line():
    with pytest.raises(ImportFileError, match=r'no "text" column \(it has \'title\', \'body\'\)') as caught:
        parse_file("csv", b"title,body\nA,B\n", max_rows=10)
    assert caught.value.line == 1 and caught.value.field == "text"


def test_csv_bad_records_are_named_by_line():
    data = b'text,title\n,empty text\nok,"T"\ntoo,many,values\nlast,row\n' + b"caf\xe9,T\n"
    parsed = parse_file("csv", data, max_rows=10)
    assert [r.line for r in parsed.rows] == [3, 5]
    assert errors_of(parsed)[:2] == [(2, "text", "is empty"), (4, None, "has 3 values but the header has 2 columns")]
    assert errors_of(parsed)[2][0] == 6 and "is not valid UTF-8 (byte 0xe9)" in errors_of(parsed)[2][2]


def test_a_csv_with_a_bom_and_extra_columns_reads_them_and_names_the_extras():
    data = codecs.BOM_UTF8 + b"id,text,source\n1,Hello,web\n"
    parsed = parse_file("csv", data, max_rows=10)
    assert [r.text for r in parsed.rows] == ["Hello"] and parsed.ignored_columns == ["id", "source"]


def test_a_csv_with_only_a_header_has_no_rows():
    with pytest.raises(ImportFileError, match="no rows"):
        parse_file("csv", b"text,title\n", max_rows=10)


def test_a_csv_quote_left_open_names_its_line():
    with pytest.raises(ImportFileError, match="line 3 cannot be read as CSV") as caught:
        parse_file("csv", b'text\nfine\n"open quote\n', max_rows=10)
    assert caught.value.line == 3


# Parquet ----------------------------------------------------------------------


def test_parquet_rows_are_numbered_from_1_and_nulls_and_types_named():
    data = parquet(pa.table({"text": ["One", None, "Three", ""], "title": ["a", "b", None, "d"],
                             "extra": [1, 2, 3, 4]}))
    parsed = parse_file("parquet", data, max_rows=10)
    assert [(r.line, r.text, r.title) for r in parsed.rows] == [(1, "One", "a"), (3, "Three", "")]
    assert errors_of(parsed) == [(2, "text", "must be a string, not null"), (4, "text", "is empty")]
    assert parsed.ignored_columns == ["extra"]


def test_parquet_with_a_text_column_of_numbers_names_each_row():
    parsed = parse_file("parquet", parquet(pa.table({"text": [1, 2]})), max_rows=10)
    assert errors_of(parsed) == [(1, "text", "must be a string, not a number"),
                                 (2, "text", "must be a string, not a number")]


def test_parquet_without_a_text_column_is_refused():
    with pytest.raises(ImportFileError, match=r'no "text" column \(it has \'body\'\)'):
        parse_file("parquet", parquet(pa.table({"body": ["x"]})), max_rows=10)


def test_a_file_that_is_not_parquet_is_refused_by_its_magic_bytes():
    with pytest.raises(ImportFileError, match="not Parquet"):
        parse_file("parquet", jsonl({"text": "a"}), max_rows=10)


def test_a_corrupt_parquet_file_is_refused_not_crashed_on():
    good = parquet(pa.table({"text": [f"passage {n} " * 20 for n in range(200)]}))
    middle = len(good) // 2
    corrupt = good[:8] + bytes(len(good) - 16) + good[-8:]  # footer kept, everything else zeroed
    truncated = good[:middle] + good[-4:]
    for data in (corrupt, truncated):
        with pytest.raises(ImportFileError, match="Parquet file"):
            parse_file("parquet", data, max_rows=10_000)


def test_parquet_over_the_row_limit_is_refused_from_its_metadata():
    with pytest.raises(ImportFileError, match="more than 2 rows"):
        parse_file("parquet", parquet(pa.table({"text": ["a", "b", "c"]})), max_rows=2)


def test_row_errors_serialise_with_line_field_and_error():
    assert RowError(3, "text", "is missing").as_dict() == {"line": 3, "field": "text", "error": "is missing"}
