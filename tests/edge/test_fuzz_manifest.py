"""Mutated bundle manifests through `edge inspect` and Bundle.open/load_task plus one frame: accepted, or refused
with one clear line (an exit code 2 line, a BundleError); never a traceback. bench/fuzz.py runs 2,000."""
from __future__ import annotations

import json

import pytest

from .fuzz_inputs import check_manifest, manifest_copy, manifest_texts
from .fuzz_support import LogWatch, fuzz, lcnet_bundle, manifest_of

EXAMPLES = 120


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, shared_dir):
    return lcnet_bundle(tmp_path_factory.getbasetemp() / "fuzz-lcnet")


def test_mutated_manifests_are_loaded_or_refused_in_one_line(bundle, tmp_path):
    folder = manifest_copy(bundle, tmp_path / "bundle")
    seen = {"accepted": 0, "errors": 0}
    with LogWatch() as logs:
        def one(text: bytes) -> None:
            outcome = check_manifest(text, folder, tmp_path / "state", logs).check()
            seen["errors" if outcome.error else "accepted"] += 1
        fuzz(manifest_texts(bundle), EXAMPLES, one)
    assert seen["errors"] > EXAMPLES // 3 and seen["accepted"] > 0, seen


def op_named_by_a_list(manifest: dict) -> None:
    manifest["models"][0]["preprocess"][0]["op"] = ["color"]


def two_means_for_three_channels(manifest: dict) -> None:
    next(op for op in manifest["models"][0]["preprocess"] if op["op"] == "normalize")["mean"] = [0.5, 0.5]


def a_crop_of_no_pixels(manifest: dict) -> None:
    next(op for op in manifest["models"][0]["preprocess"] if op["op"] == "center_crop")["width"] = 0


FOUND = [op_named_by_a_list, two_means_for_three_channels, a_crop_of_no_pixels]


@pytest.mark.parametrize("mutate", FOUND, ids=[f.__name__ for f in FOUND])
def test_manifests_the_fuzzer_found(bundle, tmp_path, mutate):
    folder = manifest_copy(bundle, tmp_path / "bundle")
    manifest = manifest_of(bundle)
    mutate(manifest)
    with LogWatch() as logs:
        outcome = check_manifest(json.dumps(manifest).encode(), folder, tmp_path / "state", logs).check()
    assert outcome.error and len(outcome.error) < 1200, outcome


def candidates_as_a_flag(manifest: dict) -> None:
    manifest.setdefault("metrics", {})["candidates"] = True
    manifest["metrics"]["pictures"] = 7


def a_field_name_with_a_line_break(manifest: dict) -> None:
    manifest["provenance"]["bad\nkey"] = 1


@pytest.mark.parametrize("mutate", [candidates_as_a_flag, a_field_name_with_a_line_break],
                         ids=["candidates_as_a_flag", "a_field_name_with_a_line_break"])
def test_manifests_the_full_fuzz_run_crashed_on(bundle, tmp_path, mutate):
    """bench/fuzz.py found these: `edge inspect` read the free-form metrics as tables (AttributeError), and a
    refused field's name carried its line break into the error."""
    folder = manifest_copy(bundle, tmp_path / "bundle")
    manifest = manifest_of(bundle)
    mutate(manifest)
    with LogWatch() as logs:
        outcome = check_manifest(json.dumps(manifest).encode(), folder, tmp_path / "state", logs).check()
    assert outcome.error is None or "\n" not in outcome.error, outcome
    assert (outcome.error is None) == (mutate is candidates_as_a_flag), outcome
