"""COCO RLE: the compressed-string format other implementations read, and exact round trips."""
from __future__ import annotations

import json

import numpy as np
import pytest

from runtimes.tasks import rle

# Counts and strings that an independent implementation of the COCO string format checks itself
# against (small runs, a negative difference to the count two places back, a multi-group number).
KNOWN = [([0, 6, 1, 3], "061M"), ([0, 6, 1], "061"), ([0, 6, 1, 1], "061K"), ([0, 6, 1, 5], "061O"),
         ([0, 6, 1, 6], "0610"), ([0, 1, 1, 2, 1, 3, 1, 4, 1], "011101010"), ([0, 1024], "0PP1")]


@pytest.mark.parametrize("counts, text", KNOWN)
def test_counts_and_strings_agree_with_an_independent_implementation(counts, text):
    assert rle.counts_to_string(counts) == text
    assert rle.string_to_counts(text) == counts


def test_runs_are_counted_column_major_starting_with_zeros():
    mask = np.array([[0, 1, 1],
                     [0, 1, 0]], bool)
    # columns top to bottom: (0,0) (1,1) (1,0) -> zeros 2, ones 3, zeros 1
    assert rle.run_lengths(mask) == [2, 3, 1]
    assert rle.run_lengths(~mask) == [0, 2, 3, 1]
    assert rle.encode(mask) == {"size": [2, 3], "counts": rle.counts_to_string([2, 3, 1])}


def test_random_masks_round_trip_through_both_count_forms():
    rng = np.random.default_rng(7)
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = rng.random((h, w)) < rng.random()
        encoded = rle.encode(mask)
        assert np.array_equal(rle.decode(json.loads(json.dumps(encoded))), mask)
        assert np.array_equal(rle.decode({"size": [h, w], "counts": rle.run_lengths(mask)}), mask)
        assert rle.area(encoded) == int(mask.sum())


def test_large_runs_and_empty_and_full_masks():
    big = np.zeros((1080, 1920), bool)
    big[100:900, 300:1700] = True
    encoded = rle.encode(big)
    assert np.array_equal(rle.decode(encoded), big) and rle.area(encoded) == 800 * 1400
    assert len(encoded["counts"]) < 8000       # far smaller than the ~2 MB of the pixels
    for mask in (np.zeros((5, 7), bool), np.ones((5, 7), bool)):
        assert np.array_equal(rle.decode(rle.encode(mask)), mask)
    assert rle.bbox(big) == [300, 100, 1700, 900] and rle.bbox(np.zeros((3, 3), bool)) is None


def test_corrupt_rle_is_a_clear_error():
    with pytest.raises(rle.RleError, match="cover"):
        rle.decode({"size": [4, 4], "counts": [3, 3]})
    with pytest.raises(rle.RleError, match="ends in the middle"):
        rle.decode({"size": [4, 4], "counts": "P"})        # 'P' = a group that says more follow
    with pytest.raises(rle.RleError, match="size"):
        rle.decode({"counts": "04"})
