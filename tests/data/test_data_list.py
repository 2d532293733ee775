"""``d2seg data list`` names every registered dataset with its task and class count, and a
misspelt dataset name elsewhere points at the nearest registered ones and at that command."""

from __future__ import annotations

from d2seg.cli.main import main


def test_data_list_matches_the_catalog(capsys):
    from detectron2.data import MetadataCatalog

    from d2seg.data.manifest import register_all

    assert main(["data", "list"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    for name in register_all():
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
