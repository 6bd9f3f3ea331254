"""Agreement metrics on hand-computed cases (areas, edit distances and counts worked out in comments)."""
from __future__ import annotations

import numpy as np
import pytest

from converters.metrics import (BoxMatch, box_f1, box_iou, cer, edit_distance, mask_iou, match_boxes, mean_iou, pck,
                                top1_agreement)


def test_rectangle_iou_half_overlap():
    # [0,0,2,2] and [1,0,3,2]: intersection 1x2 = 2, union 4 + 4 - 2 = 6
    assert box_iou([0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(1 / 3)


def test_quadrilateral_iou_rotated_inside_square():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    diamond = np.array([[1, 0], [2, 1], [1, 2], [0, 1]], float)   # area 2, wholly inside the square (area 4)
    assert box_iou(square, diamond) == pytest.approx(0.5)
    assert box_iou(square, square + 10) == 0.0


def test_quadrilateral_and_rectangle_forms_agree():
    quad = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    assert box_iou(quad, [1, 0, 3, 2]) == pytest.approx(box_iou([0, 0, 2, 2], [1, 0, 3, 2]))


def test_match_counts_and_f1():
    reference = [[0, 0, 10, 10], [20, 0, 30, 10]]
    predicted = [[0, 0, 10, 9],          # IoU 0.9 with the first reference box: a match
                 [25, 0, 35, 10],        # IoU 5/15 with the second: below 0.5, a false positive
                 [50, 50, 60, 60]]       # nothing there: a false positive
    found = match_boxes(predicted, reference, 0.5)
    assert (found.tp, found.fp, found.fn) == (1, 2, 1)
    assert found.f1 == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))          # 0.4
    assert found.precision == pytest.approx(1 / 3) and found.recall == pytest.approx(1 / 2)


def test_matching_is_one_to_one():
    # two predictions over the same reference box: only one may count
    found = match_boxes([[0, 0, 10, 10], [0, 0, 10, 9]], [[0, 0, 10, 10]], 0.5)
    assert (found.tp, found.fp, found.fn) == (1, 1, 0)


def test_labels_must_agree_when_given():
    found = match_boxes([[0, 0, 10, 10]], [[0, 0, 10, 10]], 0.5, predicted_labels=[1], reference_labels=[2])
    assert (found.tp, found.fp, found.fn) == (0, 1, 1)


def test_matches_add_up_over_images_and_empty_agrees():
    total = match_boxes([[0, 0, 1, 1]], [[0, 0, 1, 1]]) + match_boxes([], [[0, 0, 1, 1]])
    assert total == BoxMatch(1, 0, 1) and total.f1 == pytest.approx(2 / 3)
    assert box_f1([], []) == 1.0


def test_edit_distance_and_cer():
    assert edit_distance("kitten", "sitting") == 3      # k->s, e->i, +g
    assert edit_distance("", "abc") == 3
    assert edit_distance("韩国小馆", "韩国馆") == 1       # one character dropped
    assert cer(["kitten", "abc"], ["sitting", "abc"]) == pytest.approx(3 / 10)
    assert cer(["", ""], ["", ""]) == 0.0
    with pytest.raises(ValueError):
        cer(["a"], ["a", "b"])


def test_top1_agreement_labels_and_scores():
    assert top1_agreement([0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx(0.75)
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert top1_agreement(scores, [0, 1, 1]) == pytest.approx(2 / 3)


def test_pck_counts_points_within_alpha_of_the_scale():
    reference = np.zeros((1, 3, 2))
    predicted = np.array([[[0, 0], [3, 4], [6, 0]]], float)   # distances 0, 5, 6
    # threshold 0.05 * 100 = 5: the first two count
    assert pck(predicted, reference, norm=np.array([100.0]), alpha=0.05) == pytest.approx(2 / 3)
    # the third point is not visible: 2 of 2
    assert pck(predicted, reference, 100.0, 0.05, visible=np.array([[1, 1, 0]])) == 1.0


def test_mask_iou_and_mean_iou():
    a = np.zeros((4, 4), bool)
    a[:2] = True                      # 8 pixels
    b = np.zeros((4, 4), bool)
    b[1:3] = True                     # 8 pixels, 4 shared
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    labels_a, labels_b = a.astype(int), b.astype(int)
    # class 1: 4/12; class 0: 4 shared of 12 in either -> 4/12
    assert mean_iou(labels_a, labels_b, 2) == pytest.approx(4 / 12)
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
