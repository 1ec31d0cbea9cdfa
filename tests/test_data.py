"""CSV ingestion: every refusal has its own message; labels checked; sampling, splitting, safe output."""

import hashlib

import pytest

from ia3app.tables import (
    Table,
    check_labels,
    label_counts,
    load_csv,
    neutralise_formula,
    sample_per_class,
    split_holdout,
    write_csv,
)
from ia3app.errors import UserError


def table(text: str) -> Table:
    return load_csv(text.encode("utf-8"))


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize("raw, delimiter, encoding", [
    (b"text,label\nhello,pos\n", ",", "utf-8"),
    (b"text;label\nhello, world;pos\n", ";", "utf-8"),
    (b"text\tlabel\nhello; world, again\tpos\n", "\t", "utf-8"),
    (b"\xef\xbb\xbftext,label\r\nhello,pos\r\n", ",", "utf-8-sig"),
    ('text,label\n"caf\u00e9, \u201cquoted\u201d\nline",pos\n'.encode(), ",", "utf-8"),
])
def test_delimiters_and_encodings(raw, delimiter, encoding):
    t = load_csv(raw)
    assert t.columns == ["text", "label"] and t.delimiter == delimiter and t.encoding == encoding
    assert len(t.rows) == 1 and t.rows[0]["label"] == "pos" and t.rows[0]["text"].startswith(("hello", "caf"))
    assert t.sha256 == hashlib.sha256(raw).hexdigest() and t.warnings == []


def test_single_column_with_commas_and_blank_lines_and_path_input(tmp_path):
    t = table("text\nhello, world\n\nfoo\n")
    assert t.columns == ["text"] and [r["text"] for r in t.rows] == ["hello, world", "foo"]
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b\n1,2\n")
    assert load_csv(path).rows == load_csv(str(path)).rows == [{"a": "1", "b": "2"}]
    with pytest.raises(UserError, match="no file at"):
        load_csv(tmp_path / "missing.csv")


def test_trailing_delimiter_column_is_dropped_with_a_warning():
    t = table("a,b,\n1,2,\n3,4,\n")
    assert t.columns == ["a", "b"] and t.rows[1] == {"a": "3", "b": "4"}
    assert t.warnings == ["ignored an empty, unnamed last column (a trailing delimiter)"]


ERRORS = [
    (b"", "the file is empty; it needs a header row of column names and at least one row"),
    (b"\n\n  \n", "the file is empty"),
    (b"text,label\n", "the file has a header (text, label) but no rows below it"),
    (b"1,2\n3,4\n", "the first row (1, 2) looks like data, not column names; add a header row naming each column"),
    (b"a,a\n1,2\n", "column name 'a' appears twice (columns 1 and 2); names must be unique"),
    (b"a,,b\n1,2,3\n", "column 2 of the header has no name; give every column a name"),
    (b"a,b\n1,2,3\n4,5\n6\n", "rows have the wrong number of fields: the header has 2 (comma-separated); "
     "row 1 (line 2) has 3; row 3 (line 4) has 1. A value containing a comma must be in double quotes"),
    (b'a,b\n1,2\n"open,3\n', "a double quote opened on line 3 is never closed"),
    (b'a,b\n"x"y,2\n', "the file is not valid CSV on line 2"),
    (b"a,b\ncaf\xe9,1\n", "the file is not UTF-8 text: byte 0xE9 at offset 7 (line 2) cannot be decoded "
     "(perhaps Windows-1252 or Latin-1); save it from your spreadsheet as 'CSV UTF-8' and upload that"),
    ("a,b\n1,2\n".encode("utf-16"), "the file is UTF-16 text, not UTF-8"),
    (b"PK\x03\x04\x14\x00\x06\x00xl/workbook.xml", "this is a zip or Excel (.xlsx) file, not CSV text"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "this is an old Excel (.xls) file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "this is a binary file, not CSV text (it contains NUL bytes, first at byte 8)"),
    (bytes(range(1, 32)) * 10, "this looks like a binary file, not CSV text"),
]


@pytest.mark.parametrize("raw, message", ERRORS)
def test_every_bad_file_has_its_own_message(raw, message):
    with pytest.raises(UserError) as info:
        load_csv(raw)
    assert message in str(info.value)


def test_size_and_row_limits(tmp_path):
    raw = b"text,label\n" + b"some words here,pos\n" * 100
    with pytest.raises(UserError, match=r"the file is 2.011 kB; the limit is 1 kB"):
        load_csv(raw, max_bytes=1000)
    path = tmp_path / "big.csv"
    path.write_bytes(raw)
    with pytest.raises(UserError, match=r"the limit is 1 kB"):
        load_csv(path, max_bytes=1000)
    with pytest.raises(UserError, match=r"the file has 100 rows; the limit is 50 rows"):
        load_csv(raw, max_rows=50)
    assert len(load_csv(raw, max_rows=100).rows) == 100


# ---------------------------------------------------------------- labels


def test_check_labels_errors():
    with pytest.raises(UserError, match="label column 'gold' is not in the file; the file has: text, label"):
        check_labels(table("text,label\na,x\nb,y\n"), "gold")
    with pytest.raises(UserError, match="the label column 'label' is blank in rows 2, 4; fill in a label"):
        check_labels(table("text,label\na,x\nb,\nc,y\nd, \n"), "label")
    with pytest.raises(UserError, match="every row has the label 'x' in column 'label'; a classifier needs at least two"):
        check_labels(table("text,label\na,x\nb,x\n"), "label")


def test_check_labels_warnings():
    rows = "".join(f"text {i},pos\n" for i in range(70)) + "odd,neg\nodd,neg\nodd,pos\n" + "x" * 1200 + ",neg\n"
    t = table("text,label\n" + rows)
    assert label_counts(t, "label") == {"pos": 71, "neg": 3}
    warnings = check_labels(t, "label")
    assert warnings[0] == "very few rows for label 'neg' (3); 4 or more rows per label make a more reliable adapter"
    assert warnings[1].startswith("74 rows: more than few-shot training needs")
    assert warnings[2] == "1 row is an exact duplicate of an earlier row (row 72)"
    assert warnings[3] == "1 input appears with different labels"
    assert warnings[4].startswith("1 row has text longer than 1,000 characters (row 74)")
    assert check_labels(table("text,label\na,x\nb,x\nc,x\nd,x\ne,y\nf,y\ng,y\nh,y\n"), "label") == []
    dups = check_labels(table("text,label\na,x\na,x\na,x\nb,y\nc,y\nd,y\ne,y\nf,x\n"), "label")
    assert dups == ["2 rows are exact duplicates of an earlier row (rows 2, 3)"]


def test_shared_csvs_load_clean(fewshot_dir):
    for path in sorted(fewshot_dir.glob("*.csv")):
        t = load_csv(path)
        assert len(t.rows) == 32 and t.columns[-1] == "label" and t.delimiter == ","
        assert check_labels(t, "label") == []


# ---------------------------------------------------------------- sampling and splitting


def labelled(counts: dict[str, int]) -> list[dict[str, str]]:
    return [{"text": f"{label}{i}", "label": label} for label, n in counts.items() for i in range(n)]


def test_sample_per_class_is_seeded_stratified_and_keeps_file_order():
    rows = labelled({"a": 10, "b": 3, "c": 7})
    picked = sample_per_class(rows, "label", 4, seed=1)
    assert label_counts(picked, "label") == {"a": 4, "c": 4, "b": 3}
    assert picked == [r for r in rows if r in picked]  # file order
    assert picked == sample_per_class(rows, "label", 4, seed=1) != sample_per_class(rows, "label", 4, seed=2)
    t = sample_per_class(Table(["text", "label"], rows), "label", 2)
    assert isinstance(t, Table) and len(t.rows) == 6
    with pytest.raises(UserError, match="rows per label must be a whole number ≥ 1"):
        sample_per_class(rows, "label", 0)


def test_split_holdout_stratified():
    rows = labelled({"a": 10, "b": 4, "c": 1})
    train, held = split_holdout(rows, "label", 0.25, seed=0)
    assert label_counts(held, "label") == {"a": 2, "b": 1}  # round(10/4)=2, 4/4=1; a lone row stays in training
    assert label_counts(train, "label") == {"a": 8, "b": 3, "c": 1}
    assert sorted(map(str, train + held)) == sorted(map(str, rows)) and train == [r for r in rows if r in train]
    assert split_holdout(rows, "label", 0.25, seed=0) == (train, held)
    _, most = split_holdout(labelled({"a": 2, "b": 2}), "label", 0.9, seed=0)
    assert label_counts(most, "label") == {"a": 1, "b": 1}  # every label keeps a training row
    for bad in (0, 1, 1.5, "0.2"):
        with pytest.raises(UserError, match="the held-out fraction must be between 0 and 1"):
            split_holdout(rows, "label", bad)


# ---------------------------------------------------------------- output


@pytest.mark.parametrize("value, safe", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("plain", "plain"), ("a=b", "a=b"), (0.25, "0.25"), (None, ""),
])
def test_neutralise_formula(value, safe):
    assert neutralise_formula(value) == safe


def test_write_csv_neutralises_and_reads_back():
    rows = [{"text": "=cmd|' /C calc'!A0", "label": "pos", "p": 0.9}, {"text": "a, \"quoted\"\nline", "label": "@x"}]
    raw = write_csv(rows, ["text", "label", "p"])
    assert raw.startswith(b"text,label,p\r\n")
    back = load_csv(raw)
    assert back.rows == [{"text": "'=cmd|' /C calc'!A0", "label": "pos", "p": "0.9"},
                         {"text": "a, \"quoted\"\nline", "label": "'@x", "p": ""}]
