"""Checkpoint files never run code: malicious pickles are refused before anything executes."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from d2seg.errors import D2SegError
from d2seg.modeling import load_pickle_safely, load_torch_safely


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: a file appears if the loader runs it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsShell:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _weights():
    return {"model": {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
                      "conv.bias": np.array([0.5, -1.5], dtype=np.float64)},
            "__author__": "test", "matching_heuristics": False}


@pytest.mark.parametrize("payload", [_CreatesFile, _RunsShell])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, protocol):
    victim = tmp_path / "pwned"
    evil = _weights()
    evil["model"]["conv.weight"] = payload(victim)
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps(evil, protocol=protocol))
    with pytest.raises(D2SegError) as err:
        load_pickle_safely(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert (".open'" if payload is _CreatesFile else ".system'") in message
    assert not victim.exists()
    # the plain pickle module would have run it: proof the file really is malicious
    pickle.loads(path.read_bytes())
    assert victim.exists()


def test_malicious_pth_is_refused_and_never_runs(tmp_path):
    victim = tmp_path / "pwned"
    path = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.ones(2)}, "extra": _CreatesFile(victim)}, path)
    with pytest.raises(D2SegError) as err:
        load_torch_safely(path)
    assert str(path) in str(err.value) and "open" in str(err.value)
    assert "\n" not in str(err.value)
    assert not victim.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legitimate_pickles_load_at_every_protocol(tmp_path, protocol):
    data = _weights()
    data["model"] = OrderedDict(data["model"])
    data["model"]["scalar"] = np.float32(2.5)
    data["nested"] = [1, 2.0, "x", (True, None), {"k": b"bytes"}]
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_pickle_safely(path)
    assert loaded.keys() == data.keys()
    for key, value in data["model"].items():
        np.testing.assert_array_equal(loaded["model"][key], value)
        assert np.asarray(loaded["model"][key]).dtype == np.asarray(value).dtype
    assert loaded["nested"] == data["nested"]


def test_legitimate_pth_loads_tensors_and_numpy(tmp_path):
    data = {"model": {"w": torch.randn(3, 4), "b": torch.arange(3)}, "iteration": 7,
            "array": np.linspace(0, 1, 5)}
    path = tmp_path / "ok.pth"
    torch.save(data, path)
    loaded = load_torch_safely(path)
    torch.testing.assert_close(loaded["model"]["w"], data["model"]["w"])
    torch.testing.assert_close(loaded["model"]["b"], data["model"]["b"])
    assert loaded["iteration"] == 7
    np.testing.assert_array_equal(loaded["array"], data["array"])


@pytest.mark.parametrize("suffix, loader", [(".pkl", load_pickle_safely), (".pth", load_torch_safely)])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoints_give_one_line_naming_the_file(tmp_path, suffix, loader, damage):
    path = tmp_path / f"model{suffix}"
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps(_weights(), protocol=4))
    else:
        torch.save({"model": {"w": torch.randn(64, 64)}}, path)
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[: len(blob) // 2], "garbage": b"\x93NOT A CHECKPOINT" * 9,
                      "empty": b""}[damage])
    with pytest.raises(D2SegError) as err:
        loader(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert "corrupt" in str(err.value) or "empty" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(D2SegError, match="not found"):
        load_torch_safely(tmp_path / "nope.pth")


def test_pickles_written_with_numpy_1_names_load(tmp_path):
    """Model-zoo pickles predate numpy 2 and name numpy.core.multiarray; those are admitted."""
    data = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(2.0)}
    blob = pickle.dumps(data, protocol=2)
    assert b"numpy._core.multiarray" in blob
    path = tmp_path / "legacy.pkl"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded = load_pickle_safely(path)
    np.testing.assert_array_equal(loaded["w"], data["w"])
    assert loaded["s"] == data["s"] and type(loaded["s"]) is np.float64
