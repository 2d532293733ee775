"""One hand-built case per TIDE error type, with only that error present; each equals tidecv."""

from __future__ import annotations

import pytest

from d2seg.analysis.tide import ERROR_TYPES, run_tide


A = (10, 10, 20, 20)       # an object
B = (50, 20, 30, 30)       # another object, far from A
SHIFTED = (22, 10, 20, 20)  # IoU(A, SHIFTED) = 8*20 / (2*400 - 160) = 0.25
NEAR = (11, 10, 20, 20)    # IoU(A, NEAR) = 380/420 = 0.905
EMPTY = (70, 45, 15, 15)   # overlaps nothing

CASES = {
    # right place, wrong class (the object is not otherwise found)
    "classification": ([(1, 1, A), (1, 2, B)],
                       [(1, 1, 0.6, A), (1, 3, 0.9, B)]),
    # right class, IoU 0.25 with the object
    "localization": ([(1, 1, A), (1, 2, B)],
                     [(1, 1, 0.9, SHIFTED), (1, 2, 0.8, B)]),
    # wrong class and IoU 0.25 with an object someone else found
    "both": ([(1, 1, A), (1, 2, B)],
             [(1, 1, 0.6, A), (1, 2, 0.5, B), (1, 3, 0.9, SHIFTED)]),
    # a second detection of an object already found
    "duplicate": ([(1, 1, A), (1, 1, B)],
                  [(1, 1, 0.9, A), (1, 1, 0.8, NEAR), (1, 1, 0.7, B)]),
    # a confident detection where there is nothing
    "background": ([(1, 1, A), (1, 2, B)],
                   [(1, 1, 0.95, EMPTY), (1, 1, 0.6, A), (1, 2, 0.5, B)]),
    # an object nobody detected
    "missed": ([(1, 1, A), (1, 1, B)],
               [(1, 1, 0.9, A)]),
}
# AP50 (TIDE, %) of each case and after fixing its error
EXPECTED_AP = {"localization": (50.0, 100.0), "missed": (5100 / 101, 100.0)}  # 101 recall points


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("error", ERROR_TYPES)
def test_only_this_error(error, iou_type, write_case, tidecv_reference, scenes):
    objects, dets = CASES[error]
    gt_path, res_path = write_case(scenes.make_gt(objects), scenes.make_results(dets))
    run = run_tide(str(gt_path), str(res_path), iou_type)
    ours = run.summary()
    assert ours["counts"] == {t: (1 if t == error else 0) for t in ERROR_TYPES}
    assert ours["dAP"][error] > 0
    assert all(v == 0 for t, v in ours["dAP"].items() if t != error)
    if error in EXPECTED_AP:
        base, fixed = EXPECTED_AP[error]
        assert ours["ap50"] == pytest.approx(base, abs=1e-9)
        assert ours["ap50"] + ours["dAP"][error] == pytest.approx(fixed, abs=1e-9)
    scenes.assert_same_as_tidecv(ours, tidecv_reference(gt_path, res_path, iou_type))


def test_crowd_region_swallows_a_detection(write_case, tidecv_reference, scenes):
    gt = scenes.make_gt([(1, 1, A)], crowds=[(1, 1, (40, 5, 50, 50))])
    res = scenes.make_results([(1, 1, 0.9, (45, 10, 30, 30)), (1, 1, 0.8, A)])
    gt_path, res_path = write_case(gt, res)
    ours = run_tide(str(gt_path), str(res_path), "bbox").summary()
    assert ours["ap50"] == pytest.approx(100.0)  # the detection inside the crowd is not an FP
    scenes.assert_same_as_tidecv(ours, tidecv_reference(gt_path, res_path, "bbox"))


def test_image_without_objects_and_classes_without_objects(write_case, tidecv_reference, scenes):
    gt = scenes.make_gt([(1, 1, A), (2, 2, B)], num_images=3)
    res = scenes.make_results([(3, 1, 0.7, A), (1, 3, 0.9, EMPTY), (2, 2, 0.4, B), (1, 1, 0.3, A)])
    gt_path, res_path = write_case(gt, res)
    for t in ("bbox", "segm"):
        ours = run_tide(str(gt_path), str(res_path), t).summary()
        assert ours["counts"]["background"] == 2
        scenes.assert_same_as_tidecv(ours, tidecv_reference(gt_path, res_path, t))


def test_ties_in_score_keep_the_reference_order(write_case, tidecv_reference, scenes):
    objects = [(1, 1, A), (1, 1, B), (2, 1, A), (2, 2, B)]
    dets = [(1, 1, 0.5, A), (1, 1, 0.5, SHIFTED), (1, 1, 0.5, EMPTY), (2, 2, 0.5, A),
            (2, 1, 0.5, A), (2, 2, 0.5, NEAR), (1, 1, 0.5, B)]
    gt_path, res_path = write_case(scenes.make_gt(objects), scenes.make_results(dets))
    for t in ("bbox", "segm"):
        ours = run_tide(str(gt_path), str(res_path), t).summary()
        scenes.assert_same_as_tidecv(ours, tidecv_reference(gt_path, res_path, t), tol=1e-9)
