"""Reading passage files (JSONL, CSV, Parquet) into rows: pure parsing, no database.

`parse_file` turns an uploaded file's bytes into a `Parsed`: the good rows, each
with the line it came from, and the bad ones as `RowError`s naming their line
and field. A problem with the whole file (an encoding that is not UTF-8, a CSV
without a `text` column, a corrupt Parquet file, too many rows) raises
`ImportFileError`. The rules of what a passage may be (normalised text, the
length limit, duplicates) belong to `curation.services.lineages`, not here.

Lines are 1-based; a CSV's header is line 1 and a record spanning several lines
is named by the line it starts on. Parquet has no lines: rows are numbered
from 1 in file order. Fields other than `text` and `title` are ignored and
named once in `Parsed.ignored_columns`.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import PurePath

FORMATS = ("jsonl", "csv", "parquet")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
FIELDS = ("text", "title")
PARQUET_MAGIC = b"PAR1"

# Python's csv module refuses fields over 128 KiB by default; the size of the
# file and the per-text limit bound them here instead.
csv.field_size_limit(2**31 - 1)


class ImportFileError(ValueError):
    """A problem with the whole file; `line` is set when one line is to blame (a CSV header)."""

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.line = line
        self.field = field


@dataclass(frozen=True)
class Row:
    line: int
    text: str
    title: str


@dataclass(frozen=True)
class RowError:
    line: int
    field: str | None
    error: str

    def as_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "error": self.error}


@dataclass
class Parsed:
    rows: list[Row] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.rows) + len(self.errors)


def format_for(filename: str) -> str:
    """The format a file name's extension names, or ImportFileError."""
    suffix = PurePath(filename or "").suffix.lower()
    if suffix not in EXTENSIONS:
        named = f"'{suffix}'" if suffix else "no extension"
        raise ImportFileError(f"unsupported file type ({named}); upload a .jsonl, .csv or .parquet file",
                              field="file")
    return EXTENSIONS[suffix]


def check_content(fmt: str, head: bytes, tail: bytes = b"") -> None:
    """Cheap checks on a file's first and last bytes, so that an obviously wrong file
    is refused at upload: text that is UTF-16/UTF-32 or binary, Parquet without its magic."""
    if not head:
        raise ImportFileError("the file is empty", field="file")
    if fmt == "parquet":
        if not head.startswith(PARQUET_MAGIC) or (tail and not tail.endswith(PARQUET_MAGIC)):
            raise ImportFileError("the file is not Parquet (it does not begin and end with 'PAR1')", field="file")
        return
    _check_text_encoding(head)


def _check_text_encoding(head: bytes) -> None:
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise ImportFileError("the file is UTF-32 encoded; save it as UTF-8", field="file")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFileError("the file is UTF-16 encoded; save it as UTF-8", field="file")
    if b"\x00" in head:
        # UTF-16 without a byte-order mark puts a NUL beside every ASCII character.
        sample = head[:4096]
        if sample.count(b"\x00") * 3 >= len(sample):
            raise ImportFileError("the file looks UTF-16 encoded (no byte-order mark); save it as UTF-8",
                                  field="file")
        raise ImportFileError("the file holds NUL bytes: it is binary, not UTF-8 text", field="file")


def parse_file(fmt: str, data: bytes, *, max_rows: int) -> Parsed:
    """Every row of the file, good or bad; ImportFileError for a problem with the whole file."""
    check_content(fmt, data[:4096], data[-4:])
    if fmt == "jsonl":
        parsed = _parse_jsonl(data, max_rows=max_rows)
    elif fmt == "csv":
        parsed = _parse_csv(data, max_rows=max_rows)
    elif fmt == "parquet":
        parsed = _parse_parquet(data, max_rows=max_rows)
    else:
        raise ImportFileError(f"unknown format {fmt!r}")
    if not parsed.total:
        raise ImportFileError("the file has no rows")
    return parsed


def _too_many(max_rows: int) -> ImportFileError:
    return ImportFileError(f"the file has more than {max_rows} rows, the limit; split it into smaller files")


def _type_name(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object",
            str: "a string"}.get(type(value), type(value).__name__)


def _row_from_record(line: int, record: dict, errors: list[RowError]) -> Row | None:
    """A Row from a mapping with `text` and maybe `title`, or None with the error appended."""
    text = record.get("text")
    title = record.get("title")
    if "text" not in record:
        errors.append(RowError(line, "text", "is missing"))
    elif not isinstance(text, str):
        errors.append(RowError(line, "text", f"must be a string, not {_type_name(text)}"))
    elif not text.strip():
        errors.append(RowError(line, "text", "is empty"))
    elif title is not None and not isinstance(title, str):
        errors.append(RowError(line, "title", f"must be a string or null, not {_type_name(title)}"))
    else:
        return Row(line=line, text=text, title=title or "")
    return None


def _decode_line(number: int, raw: bytes) -> str | RowError:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RowError(number, None, f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                                      "of the line); save the file as UTF-8")


def _parse_jsonl(data: bytes, *, max_rows: int) -> Parsed:
    parsed = Parsed()
    ignored: dict[str, None] = {}
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue  # blank lines (a trailing newline, spacing) are not rows
        if parsed.total >= max_rows:
            raise _too_many(max_rows)
        line = _decode_line(number, raw)
        if isinstance(line, RowError):
            parsed.errors.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            parsed.errors.append(RowError(number, None, f"is not valid JSON: {exc.msg} at column {exc.colno}"))
            continue
        except RecursionError:
            parsed.errors.append(RowError(number, None, "is not valid JSON: nested too deeply"))
            continue
        if not isinstance(record, dict):
            parsed.errors.append(RowError(number, None, f'must be a JSON object with a "text" field, '
                                                        f"not {_type_name(record)}"))
            continue
        for key in record:
            if key not in FIELDS:
                ignored.setdefault(key)
        row = _row_from_record(number, record, parsed.errors)
        if row:
            parsed.rows.append(row)
    parsed.ignored_columns = list(ignored)
    return parsed


def _parse_csv(data: bytes, *, max_rows: int) -> Parsed:
    """Comma-separated, double-quoted (RFC 4180), a header naming the columns.

    The file is decoded with `surrogateescape`, so that a byte that is not UTF-8
    fails only the record it is in, which is then named by its line.
    """
    parsed = Parsed()
    text = data.decode("utf-8", errors="surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportFileError(f"the CSV header cannot be read: {exc}", line=1) from None
    if header is None:
        raise ImportFileError("the file has no rows")
    if _has_surrogates("".join(header)):
        raise ImportFileError("the CSV header is not valid UTF-8; save the file as UTF-8", line=1)
    columns = [name.strip() for name in header]
    if "text" not in columns:
        found = ", ".join(repr(c) for c in columns) or "nothing"
        raise ImportFileError(f'the CSV header has no "text" column (it has {found})', line=1, field="text")
    for name in FIELDS:
        if columns.count(name) > 1:
            raise ImportFileError(f'the CSV header names the "{name}" column twice', line=1, field=name)
    parsed.ignored_columns = [c for c in columns if c not in FIELDS]
    ended = reader.line_num
    while True:
        start = ended + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ImportFileError(f"line {start} cannot be read as CSV: {exc}", line=start) from None
        ended = reader.line_num
        if not values or values == [""]:
            continue  # a blank line
        if parsed.total >= max_rows:
            raise _too_many(max_rows)
        if _has_surrogates("".join(values)):
            bad = next(v for v in values if _has_surrogates(v))
            byte = next(ord(ch) - 0xDC00 for ch in bad if _has_surrogates(ch))
            parsed.errors.append(RowError(start, None, f"is not valid UTF-8 (byte 0x{byte:02x}); "
                                                       "save the file as UTF-8"))
            continue
        if len(values) != len(columns):
            parsed.errors.append(RowError(start, None, f"has {len(values)} values but the header has "
                                                       f"{len(columns)} columns"))
            continue
        row = _row_from_record(start, dict(zip(columns, values)), parsed.errors)
        if row:
            parsed.rows.append(row)
    return parsed


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _parse_parquet(data: bytes, *, max_rows: int) -> Parsed:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parsed = Parsed()
    try:
        handle = pq.ParquetFile(pa.BufferReader(data))
        names = handle.schema_arrow.names
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others for a damaged file
        raise ImportFileError(f"the Parquet file cannot be read: {exc}") from None
    if "text" not in names:
        found = ", ".join(repr(n) for n in names) or "nothing"
        raise ImportFileError(f'the Parquet file has no "text" column (it has {found})', field="text")
    if handle.metadata.num_rows > max_rows:
        raise _too_many(max_rows)
    parsed.ignored_columns = [n for n in names if n not in FIELDS]
    wanted = [n for n in FIELDS if n in names]
    number = 0
    try:
        for batch in handle.iter_batches(batch_size=4096, columns=wanted):
            for record in batch.to_pylist():
                number += 1
                row = _row_from_record(number, record, parsed.errors)
                if row:
                    parsed.rows.append(row)
    except Exception as exc:
        raise ImportFileError(f"the Parquet file is damaged after row {number}: {exc}") from None
    return parsed
