"""Bit-flipped, truncated and patched real pictures (JPEG baseline/progressive/CMYK/EXIF, PNG 8/16-bit, palette,
alpha, grey, WebP, BMP, two-page TIFF) through `edge infer` and through a running daemon: each picture gets one
result or one clear error line / error message, no traceback; the daemon still gives results afterwards.
bench/fuzz.py runs 1,000 of each."""
from __future__ import annotations

import pytest

from .fuzz_daemon import FuzzedDaemon, fuzz_pictures
from .fuzz_inputs import check_infer, mutated_pictures, picture_forms, write_pictures
from .fuzz_support import Tally, fuzz, lcnet_bundle

EXAMPLES = 60


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, shared_dir):
    return lcnet_bundle(tmp_path_factory.getbasetemp() / "fuzz-lcnet")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, shared_dir) -> list[tuple[str, bytes]]:
    drawn: list[tuple[str, bytes]] = []
    fuzz(mutated_pictures(picture_forms(tmp_path_factory.mktemp("forms"))), EXAMPLES, drawn.append)
    return drawn


def test_mutated_pictures_through_edge_infer(bundle, pictures, tmp_path):
    tally = Tally()
    for outcome in check_infer(bundle, write_pictures(pictures, tmp_path / "in"), tmp_path / "state"):
        tally.count(outcome.check())
    assert tally.inputs == EXAMPLES and tally.errors > 0 and tally.accepted > 0, tally.line("edge infer")


def test_mutated_pictures_through_the_daemon(bundle, pictures, tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon):
    target = FuzzedDaemon(mqtt_broker, edge_daemon, mqtt_subscriber, bundle, tmp_path)
    try:
        tally = fuzz_pictures(target, pictures, timeout=120)
        for example in tally.examples:
            pytest.fail(example)
        result = target.still_works()
    finally:
        target.close()
    assert tally.inputs == EXAMPLES and tally.errors > 0 and tally.accepted > 0, tally.line("daemon")
    assert result["results"]
