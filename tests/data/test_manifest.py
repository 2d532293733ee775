"""Manifests: paths are resolved and checked, and every mistake is one line naming file and field."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from d2seg.data import manifest as mf
from d2seg.data.register import register_manifest, unregister_manifest
from d2seg.errors import D2SegError


def _tiny_coco(folder: Path) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.jpg").write_bytes(b"not decoded by manifests")
    (folder / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
        "annotations": [], "categories": [{"id": 3, "name": "cat"}]}))


def _write(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


GOOD = """name: {name}
kind: coco_instances
splits:
  train:
    images: images
    annotations: ann.json
"""


@pytest.fixture
def dataset(tmp_path) -> Path:
    _tiny_coco(tmp_path)
    return tmp_path


def _error(path: Path) -> D2SegError:
    with pytest.raises(D2SegError) as info:
        mf.load_manifest(path)
    message = info.value.one_line()
    assert "\n" not in message and str(path) in message
    return info.value


def test_good_manifest_resolves_paths_relative_to_its_folder(dataset):
    m = mf.load_manifest(_write(dataset, GOOD.format(name="good")))
    assert m.name == "good" and m.kind == "coco_instances" and m.ignore_label == 255
    assert m.splits["train"].images == (dataset / "images").resolve()
    assert m.splits["train"].annotations == (dataset / "ann.json").resolve()
    assert m.splits["train"].panoptic_root is None and m.classes is None


def test_absolute_root_and_absolute_paths_are_accepted(dataset, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("manifests")
    text = f"name: abs\nkind: coco_instances\nroot: {dataset}\nsplits:\n  train:\n" \
           f"    images: images\n    annotations: {dataset / 'ann.json'}\n"
    m = mf.load_manifest(_write(elsewhere, text))
    assert m.splits["train"].images == (dataset / "images").resolve()


@pytest.mark.parametrize("text, field, reason", [
    ("name: x\nkind: [unclosed\n", "line", "malformed YAML"),
    ("- just\n- a list\n", None, "YAML mapping"),
    ("kind: coco_instances\nsplits: {}\n", "name", "missing required key"),
    ("name: x\nsplits: {}\n", "kind", "missing required key"),
    ("name: x\nkind: coco_instances\n", "splits", "missing required key"),
    ("name: 3\nkind: coco_instances\nsplits: {}\n", "name", "non-empty string"),
    ("name: 'a b'\nkind: coco_instances\nsplits: {}\n", "name", "letters, digits"),
    ("name: x\nkind: cocoinstances\nsplits: {}\n", "kind", "unknown kind"),
    ("name: x\nkind: coco_instances\nsplits: []\n", "splits", "must map split names"),
    ("name: x\nkind: coco_instances\nsplits:\n  train: images\n", "splits.train", "must be a mapping"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: images\n", "splits.train.annotations",
     "missing required key"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: images\n    annotations: 7\n",
     "splits.train.annotations", "non-empty string"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: images\n    annotation: ann.json\n",
     "splits.train.annotation", "unknown key"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: images\n    annotations: ann.json\n"
     "    sem_seg_root: images\n", "splits.train.sem_seg_root", "not used by kind"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: missing\n    annotations: ann.json\n",
     "splits.train.images", "folder not found"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: images\n    annotations: no.json\n",
     "splits.train.annotations", "file not found"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: ../images\n    annotations: ann.json\n",
     "splits.train.images", "escapes the dataset root"),
    ("name: x\nkind: coco_instances\nroot: ..\nsplits:\n  train:\n    images: images\n    annotations: ann.json\n",
     "root", "escapes the dataset root"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: images\n    annotations: ann.json\n"
     "ignore_label: -1\n", "ignore_label", "integer 0-255"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: images\n    annotations: ann.json\n"
     "colors: [[1, 2]]\n", "colors[0]", "[R, G, B]"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: images\n    annotations: ann.json\n"
     "classes: [a, a]\n", "classes", "duplicate names"),
    ("name: x\nkind: sem_seg\nsplits:\n  train:\n    images: images\n    sem_seg_root: images\n",
     "classes", "required for kind sem_seg"),
    ("name: x\nkind: coco_instances\nsplits:\n  train:\n    images: images\n    annotations: ann.json\n"
     "generate: everything\n", "generate", "unknown generator"),
    ("name: x\nkind: coco_instances\nclases: [a]\nsplits: {}\n", "clases", "unknown key"),
])
def test_bad_manifest_is_one_line_naming_file_field_and_reason(dataset, text, field, reason):
    err = _error(_write(dataset, text))
    assert reason in err.reason
    if field:
        assert err.where is not None and err.where.startswith(field)


def test_unknown_key_suggests_the_nearest(dataset):
    err = _error(_write(dataset, "name: x\nkind: coco_instances\nclases: [a]\nsplits: {}\n"))
    assert err.hint == "did you mean 'classes'?"


def test_find_manifest_by_name_in_env_folders_and_duplicates(dataset, tmp_path_factory, monkeypatch):
    other = tmp_path_factory.mktemp("more")
    _write(dataset, GOOD.format(name="alpha"), "a.yaml")
    monkeypatch.setenv("D2SEG_DATASETS", str(dataset))
    assert mf.find_manifest("alpha").path == (dataset / "a.yaml").resolve()
    assert mf.find_manifest(str(dataset / "a.yaml")).name == "alpha"
    with pytest.raises(D2SegError, match="no manifest named 'alpah'") as info:
        mf.find_manifest("alpah")
    assert info.value.hint == "did you mean 'alpha'?"
    _tiny_coco(other)
    _write(other, GOOD.format(name="alpha"), "b.yaml")
    monkeypatch.setenv("D2SEG_DATASETS", os.pathsep.join([str(dataset), str(other)]))
    with pytest.raises(D2SegError, match="declared by 2 manifests"):
        mf.find_manifest("alpha")
    with pytest.raises(D2SegError, match="also declared by") as info:
        mf.all_manifests()
    assert info.value.where == "name"


def test_repository_demo_manifests_are_found_by_name():
    for name, kind in (("demo_instances", "coco_instances"), ("demo_panoptic", "coco_panoptic"),
                       ("demo_semseg", "sem_seg")):
        paths = [p for p in mf.manifest_files() if mf._declared_name(p) == name]
        assert len(paths) == 1
        m = mf.load_manifest(paths[0], check_files=False)
        assert m.kind == kind and set(m.splits) == {"train", "val"}


def test_registering_twice_is_idempotent_but_another_manifest_with_that_name_is_an_error(dataset):
    name = f"t{uuid.uuid4().hex[:8]}"
    m = mf.load_manifest(_write(dataset, GOOD.format(name=name)))
    try:
        assert register_manifest(m) == [f"{name}_train"]
        assert register_manifest(mf.load_manifest(m.path)) == [f"{name}_train"]
        changed = _write(dataset, GOOD.format(name=name) + "classes: [dog]\n", "other.yaml")
        with pytest.raises(D2SegError, match="already registered") as info:
            register_manifest(mf.load_manifest(changed))
        assert info.value.file == str(changed.resolve()) and info.value.where == "name"
    finally:
        unregister_manifest(name)


@pytest.mark.parametrize("content, where, reason", [
    ("{not json", "line 1, column 2", "not valid JSON (Expecting property name"),
    ("[]", None, "is an object"),
    ('{"images": [], "annotations": []}', "categories", "missing or not a list"),
    ('{"images": [], "annotations": [], "categories": [{"id": "1", "name": "a"}]}', "categories[0]",
     "integer 'id'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}',
     "categories", "duplicate category ids"),
])
def test_bad_annotation_json_is_reported_at_registration(dataset, content, where, reason):
    """What registration reads (the categories; the whole file when they cannot be found)."""
    (dataset / "ann.json").write_text(content)
    name = f"t{uuid.uuid4().hex[:8]}"
    with pytest.raises(D2SegError) as info:
        register_manifest(mf.load_manifest(_write(dataset, GOOD.format(name=name))))
    assert reason in info.value.reason and info.value.file == str((dataset / "ann.json").resolve())
    assert info.value.where == where
    from detectron2.data import DatasetCatalog

    assert f"{name}_train" not in DatasetCatalog.list()  # nothing half-registered


@pytest.mark.parametrize("content, where, reason", [
    ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', "images[0]",
     "string 'file_name'"),
    ('{"images": [], "annotations": [{"id": 1}], "categories": [{"id": 1, "name": "a"}]}',
     "annotations[0]", "needs an 'image_id'"),
])
def test_bad_annotations_are_reported_when_the_split_is_loaded(dataset, content, where, reason):
    """Registration is lazy: images and annotations are parsed (and checked) on first use."""
    from detectron2.data import DatasetCatalog

    (dataset / "ann.json").write_text(content)
    name = f"t{uuid.uuid4().hex[:8]}"
    try:
        names = register_manifest(mf.load_manifest(_write(dataset, GOOD.format(name=name))))
        with pytest.raises(D2SegError) as info:
            DatasetCatalog.get(names[0])
        assert reason in info.value.reason and info.value.where == where
        assert info.value.file == str((dataset / "ann.json").resolve())
    finally:
        unregister_manifest(name)


def test_classes_override_must_match_the_category_count(dataset):
    name = f"t{uuid.uuid4().hex[:8]}"
    m = mf.load_manifest(_write(dataset, GOOD.format(name=name) + "classes: [a, b]\n"))
    with pytest.raises(D2SegError, match="lists 2 classes but") as info:
        register_manifest(m)
    assert info.value.where == "classes"


def test_a_name_detectron2_already_uses_is_refused(dataset):
    m = mf.load_manifest(_write(dataset, GOOD.format(name="coco_2017")))  # coco_2017_train is built in
    with pytest.raises(D2SegError, match="'coco_2017_train' is already registered in detectron2"):
        register_manifest(m)
