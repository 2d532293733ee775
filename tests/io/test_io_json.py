"""d2seg.io.json.read_json: parsed values, and one error line naming the file and position."""

import json

import pytest

from d2seg.errors import D2SegError
from d2seg.io.json import read_json, read_json_or_parsed


def test_reads_what_json_reads(tmp_path):
    """Objects, lists and Python's NaN/Infinity extension parse as ``json.loads`` parses them."""
    text = '{"a": [1, 2.5, "x", null, true], "b": {"c": NaN, "d": Infinity}}'
    (tmp_path / "a.json").write_text(text)
    got, expected = read_json(tmp_path / "a.json"), json.loads(text)
    assert got["a"] == expected["a"] and got["b"]["d"] == expected["b"]["d"] == float("inf")
    assert got["b"]["c"] != got["b"]["c"]  # NaN


@pytest.mark.parametrize("text", [
    '{"a": 1,\n "b": 2\n "c": 3}',          # missing comma on line 3
    '[1, 2,\n\n   ]',                       # trailing comma
    '{"a": "unterminated\n}',
    'images: [1, 2]\n',
])
def test_syntax_error_names_file_line_and_column_as_json_does(tmp_path, text):
    """The line, column and reason are those of Python's own JSONDecodeError for the text."""
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads(text)
    with pytest.raises(D2SegError) as info:
        read_json(path)
    e = info.value
    assert e.file == str(path)
    assert e.where == f"line {ref.value.lineno}, column {ref.value.colno}"
    assert e.reason == f"not valid JSON ({ref.value.msg})"
    assert str(e) == f"{path}: line {ref.value.lineno}, column {ref.value.colno}: " \
                     f"not valid JSON ({ref.value.msg})"
    assert "\n" not in str(e)


def test_missing_folder_empty_and_not_utf8(tmp_path):
    """Hand-checked reasons for a missing file, a folder, an empty file and Latin-1 bytes."""
    with pytest.raises(D2SegError, match="results file not found") as info:
        read_json(tmp_path / "none.json", "results file")
    assert info.value.file == str(tmp_path / "none.json")
    with pytest.raises(D2SegError, match="is a folder"):
        read_json(tmp_path)
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(D2SegError, match="empty file"):
        read_json(tmp_path / "empty.json")
    (tmp_path / "latin.json").write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(D2SegError, match=r"not UTF-8 text: byte 0xe9 at offset 13") as info:
        read_json(tmp_path / "latin.json")
    assert info.value.file == str(tmp_path / "latin.json")


def test_parsed_objects_pass_through(tmp_path):
    """A dict or list is returned as the same object; a str or Path is read."""
    obj, lst = {"a": 1}, [1]
    assert read_json_or_parsed(obj) is obj and read_json_or_parsed(lst) is lst
    (tmp_path / "x.json").write_text("[3]")
    assert read_json_or_parsed(str(tmp_path / "x.json")) == [3]
    assert read_json_or_parsed(tmp_path / "x.json") == [3]
