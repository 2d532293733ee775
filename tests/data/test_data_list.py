"""``d2seg data list`` names every registered dataset with its task and class count, and a
misspelt dataset name elsewhere points at the nearest registered ones and at that command."""

from __future__ import annotations

import pytest

from d2seg.cli.main import main


def test_data_list_matches_the_catalog(capsys):
    from detectron2.data import MetadataCatalog

    from d2seg.data.register import register_datasets

    assert main(["data", "list"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    for name in register_datasets():
        meta = MetadataCatalog.get(name)
        classes = meta.get("thing_classes", None) or meta.get("stuff_classes", None)
        assert lines[name][1] == meta.evaluator_type
        assert int(lines[name][2]) == len(classes)
    assert {"demo_instances_val", "demo_semseg_val", "demo_panoptic_val"} <= set(lines)


def test_unregistered_name_suggests_nearest(capsys):
    assert main(["eval", "--results", "r.json", "--dataset", "demo_instances_vall"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "dataset 'demo_instances_vall' is not registered" in err[0]
    assert "did you mean demo_instances_val" in err[0] and "d2seg data list" in err[0]


def test_a_broken_manifest_blocks_only_its_own_datasets(tmp_path, monkeypatch, capsys):
    """One malformed manifest among the manifests: every other dataset still registers; asking
    for the broken one's dataset gives that manifest's own error; data list shows it."""
    import shutil

    from d2seg.data import manifest as mf
    from d2seg.data.register import register_datasets, registered_metadata
    from d2seg.errors import D2SegError

    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "broken.yaml").write_text("name: broken\nkind: [coco_instances\n")
    good = folder / "fine.yaml"
    shutil.copy(mf.find_manifest("demo_instances").path, good)
    text = good.read_text().replace("name: demo_instances", "name: fine")
    demo_root = mf.find_manifest("demo_instances").root
    good.write_text(text.replace("demo/", f"{demo_root}/demo/").replace("generate: demo\n", ""))
    monkeypatch.setenv("D2SEG_DATASETS", str(folder))

    names = register_datasets()
    assert "fine_val" in names and "demo_instances_val" in names
    assert str(folder / "broken.yaml") in mf.BROKEN_MANIFESTS
    with pytest.raises(D2SegError) as info:
        registered_metadata("broken_train")
    assert info.value.file == str(folder / "broken.yaml") and "YAML" in info.value.reason
    with pytest.raises(D2SegError, match="'other_train' is not registered"):
        registered_metadata("other_train")

    assert main(["data", "list"]) == 0
    captured = capsys.readouterr()
    assert f"not registered: {folder / 'broken.yaml'}" in captured.err
    assert "fine_val" in captured.out
