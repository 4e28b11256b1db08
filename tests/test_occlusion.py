"""Occlusion saliency through the runtime (issue 22): any classifier or segmenter artifact, within a stated
inference budget, on real BUSI and BreastMNIST frames."""

from __future__ import annotations

import numpy as np
import pytest

import edgemed
from edgemed.errors import OptionError
from edgemed.explain.occlusion import occlusion


def _counted(pipe):
    """Wrap the engine's infer to count the runs occlusion really makes."""
    calls = []
    infer = pipe.engine.infer

    def counting(feeds, validate=True):
        calls.append(1)
        return infer(feeds, validate=validate)

    pipe.engine.infer = counting
    return calls


def test_covering_the_lesion_is_what_lowers_the_unets_lesion_score(unet_bundle, busi):
    """On BUSI test frames with a lesion the U-Net finds, the occlusion map is hotter inside the predicted mask than
    outside it, at the frame's own size and within the budget (65 runs: the frame and an 8x8 grid)."""
    test = np.flatnonzero((busi["split"] == "test") & (busi["masks"].reshape(len(busi["masks"]), -1).max(1) > 0))
    hotter = checked = 0
    with edgemed.load(unet_bundle) as pipe:
        calls = _counted(pipe)
        for i in test[:12]:
            frame = busi["images"][i]
            mask = pipe.predict(frame).mask > 0
            if not 0.01 < mask.mean() < 0.5:
                continue
            calls.clear()
            occ = occlusion(pipe, frame, budget=65)
            assert len(calls) == occ.inferences == 65 and occ.patch == (16, 16)
            assert occ.saliency.shape == frame.shape and occ.saliency.dtype == np.float32
            assert 0.0 <= occ.saliency.min() and occ.saliency.max() <= 1.0 and "lesion" in occ.target
            checked += 1
            hotter += occ.saliency[mask].mean() > occ.saliency[~mask].mean()
            if checked == 4:
                break
    assert checked == 4 and hotter >= 3


def test_a_classifiers_occlusion_map_stays_within_its_budget(cnn_bundle, breastmnist):
    with edgemed.load(cnn_bundle) as pipe:
        calls = _counted(pipe)
        frame = breastmnist["test_images"][0]
        occ = occlusion(pipe, frame, budget=20)  # 4x4 patches of 7x7 on the 28x28 input: 17 runs
        assert len(calls) == occ.inferences == 17 and occ.patch == (7, 7)
        assert occ.saliency.shape == frame.shape and occ.saliency.max() in (0.0, 1.0)
        assert occ.target.startswith("probability of") and 0 < occ.base_score <= 1


@pytest.mark.parametrize("budget", [4, 0, 2.5, True])
def test_a_budget_below_a_2x2_grid_is_refused(cnn_bundle, budget):
    with edgemed.load(cnn_bundle) as pipe, pytest.raises(OptionError, match="budget"):
        occlusion(pipe, np.zeros((28, 28), np.uint8), budget=budget)


def test_an_output_holding_nan_is_refused_not_read_as_no_change(cnn_bundle, breastmnist):
    """Every occluded run's outputs pass the check predict's do: a NaN score would otherwise read as 'covering this
    patch changed nothing' (max(0, nan) is 0) and draw a silently empty map."""
    from edgemed.errors import InputError

    with edgemed.load(cnn_bundle) as pipe:
        infer, calls = pipe.engine.infer, []

        def nan_after_first(feeds, validate=True):
            calls.append(1)
            out = infer(feeds, validate=validate)
            return out if len(calls) == 1 else {k: np.full_like(v, np.nan) for k, v in out.items()}

        pipe.engine.infer = nan_after_first
        with pytest.raises(InputError, match="NaN or Inf"):
            occlusion(pipe, breastmnist["test_images"][0], budget=10)


def test_covering_a_detected_lesion_is_what_lowers_its_boxs_score(det_fp32, busi):
    """Per-box occlusion on BUSI test frames with a clear lesion (the detector's best box scores >= 0.5 and overlaps
    the lesion's true box at IoU >= 0.5): the box's map is hotter inside the box than far from it (outside the box
    grown by half its size each way). Measured on the first four such frames (8x8 grid): 0.89/0.36/0.32/0.62 inside
    against 0.016/0.063/0.029/0.006 far away."""
    from edgemed.detection import box_iou, boxes_from_mask

    test = np.flatnonzero(busi["split"] == "test")
    checked = 0
    with edgemed.load(det_fp32) as pipe:
        calls = _counted(pipe)
        for i in test:
            frame, truth = busi["images"][i], boxes_from_mask(busi["masks"][i] > 0)
            r = pipe.predict(frame)
            if not len(r.boxes) or r.scores[0] < 0.5 or not len(truth) or box_iou(r.boxes[:1], truth).max() < 0.5:
                continue
            calls.clear()
            occ = occlusion(pipe, frame, budget=65)
            assert len(calls) == occ.inferences == 65 and occ.patch == (16, 16)
            np.testing.assert_array_equal(occ.boxes, r.boxes)  # predict's boxes, after NMS, in frame pixels
            assert occ.box_maps.shape == (len(r.boxes), *frame.shape) and occ.box_maps.dtype == np.float32
            assert 0.0 <= occ.box_maps.min() and occ.box_maps.max() <= 1.0
            np.testing.assert_array_equal(occ.saliency, occ.box_maps.max(axis=0))
            x1, y1, x2, y2 = r.boxes[0].round().astype(int)
            my, mx = (y2 - y1) // 2, (x2 - x1) // 2
            inside, near = np.zeros(frame.shape, bool), np.zeros(frame.shape, bool)
            inside[y1:y2, x1:x2] = True
            near[max(0, y1 - my):y2 + my, max(0, x1 - mx):x2 + mx] = True
            hot, far = occ.box_maps[0][inside].mean(), occ.box_maps[0][~near].mean()
            assert hot > 0.15 and hot > 3 * far, (i, hot, far)
            checked += 1
            if checked == 4:
                break
    assert checked == 4


def test_a_detectors_occlusion_keeps_to_its_budget_and_refuses_bad_input(det_fp32, busi):
    from edgemed.errors import EdgemedError

    with edgemed.load(det_fp32) as pipe:
        calls = _counted(pipe)
        frame = next(f for f in busi["images"][busi["split"] == "test"] if len(pipe.predict(f).boxes))
        calls.clear()
        occ = occlusion(pipe, frame, budget=20)  # 4x4 patches of 32x32 on the 128x128 input: 17 runs
        assert len(calls) == occ.inferences == 17 and occ.patch == (32, 32)
        calls.clear()
        blank = occlusion(pipe, np.full((96, 80), 128, np.uint8), budget=65)  # nothing detected: nothing to cover
        assert len(calls) == blank.inferences == 1 and blank.box_maps.shape == (0, 96, 80)
        assert blank.saliency.shape == (96, 80) and not blank.saliency.any() and blank.target == "no box detected"
        with pytest.raises(OptionError, match="budget"):
            occlusion(pipe, frame, budget=4)
        with pytest.raises(EdgemedError) as bad:
            occlusion(pipe, np.zeros((3, 3, 3, 3), np.uint8), budget=65)
        assert len(str(bad.value).splitlines()) == 1
