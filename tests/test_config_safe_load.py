"""Config files are read with ``yaml.safe_load`` only: a ``!!python/object/apply`` tag is refused
with one D2SegError line naming the file, and the code it names never runs."""

from __future__ import annotations

import pytest
import yaml

from d2seg.config import load_config
from d2seg.config import loading
from d2seg.errors import D2SegError


def _payload(target) -> str:
    """A config value that, loaded unsafely, creates ``target`` (``open(target, "w")``)."""
    return f'!!python/object/apply:builtins.open ["{target}", "w"]'


def test_payload_creates_the_file_when_loaded_unsafely(tmp_path):
    """The reference: the same YAML through ``yaml.unsafe_load`` does create the file, so the
    tests below that find no file show a refusal, not a payload that never worked."""
    target = tmp_path / "created"
    handle = yaml.unsafe_load(f"OUTPUT_DIR: {_payload(target)}\n")["OUTPUT_DIR"]
    handle.close()
    assert target.exists()


@pytest.mark.parametrize("where", ["file", "base"])
def test_python_tag_is_refused_and_not_run(tmp_path, where):
    """The tag in the config itself, or in its ``_BASE_`` file: no file is created and the error
    is one line naming the file holding the tag."""
    target = tmp_path / "created"
    bad = tmp_path / "evil.yaml"
    bad.write_text(f"OUTPUT_DIR: {_payload(target)}\n")
    config = bad
    if where == "base":
        config = tmp_path / "child.yaml"
        config.write_text("_BASE_: evil.yaml\nSOLVER:\n  BASE_LR: 0.1\n")
    with pytest.raises(D2SegError) as info:
        load_config(config)
    assert not target.exists()
    message = str(info.value)
    assert "\n" not in message
    assert info.value.file == str(bad)
    assert message.startswith(f"{bad}: line 1: YAML tag not allowed in a config file")
    assert "python/object/apply:builtins.open" in message


def test_merge_itself_refuses_unsafe_yaml(tmp_path, monkeypatch):
    """With the ``_BASE_`` pre-check switched off, detectron2's merge (whose own default would
    retry with ``yaml.unsafe_load``) still refuses the tag: the safety does not depend on the
    pre-check."""
    monkeypatch.setattr(loading, "_check_bases", lambda path, seen=(): None)
    target = tmp_path / "created"
    bad = tmp_path / "evil.yaml"
    bad.write_text(f"OUTPUT_DIR: {_payload(target)}\n")
    with pytest.raises(D2SegError, match="YAML tag not allowed in a config file") as info:
        load_config(bad)
    assert not target.exists()
    assert info.value.file == str(bad)


def test_plain_config_still_loads(tmp_path):
    """A config of plain values loads and its value is used."""
    good = tmp_path / "good.yaml"
    good.write_text("SOLVER:\n  BASE_LR: 0.125\n")
    assert load_config(good).SOLVER.BASE_LR == 0.125
