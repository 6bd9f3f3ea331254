"""Mutated daemon config files through `edge run --check`: exit 0, or exit 2 with one clear line; never a
traceback (issue 14, section 3). Reduced counts here; bench/fuzz.py runs 2,000."""
from __future__ import annotations

import copy

import pytest
import yaml

from .fuzz_inputs import check_config, check_config_subprocess, config_base, config_texts
from .fuzz_support import LogWatch, fuzz, lcnet_bundle

IN_PROCESS = 200
SUBPROCESS = 3


@pytest.fixture(scope="module")
def base(tmp_path_factory, shared_dir) -> dict:
    folder = tmp_path_factory.mktemp("fuzz-config")
    return config_base(lcnet_bundle(tmp_path_factory.getbasetemp() / "fuzz-lcnet"), folder)


def test_mutated_configs_are_accepted_or_refused_in_one_line(base, tmp_path):
    seen = {"accepted": 0, "errors": 0}
    with LogWatch() as logs:
        def one(text: bytes) -> None:
            outcome = check_config(text, tmp_path / "edge.yaml", logs).check()
            seen["errors" if outcome.error else "accepted"] += 1
        fuzz(config_texts(base), IN_PROCESS, one)
    assert seen["errors"] > IN_PROCESS // 2, seen        # the mutations do reach the validation


def test_mutated_configs_through_the_installed_command(base, tmp_path):
    texts = []
    fuzz(config_texts(base), SUBPROCESS, texts.append)
    outcomes = [check_config_subprocess(text, tmp_path / "edge.yaml").check() for text in texts]
    assert len(outcomes) == SUBPROCESS


# Inputs the fuzzer found crashing, kept as fixed cases: (what, path in the config, value) or raw file bytes.
FOUND = [("a NUL byte for a file", None, b"\x00"),
         ("a key with control characters", ("pipelines", 0, "home_assistant", "3\x89[\x1d"), 1),
         ("a key with a carriage return", ("!\r\xe4L",), 0.5),
         ("the home folder of nobody", ("state_dir",), "~nosuchuser/x"),
         ("the home folder of nobody, as bundle", ("pipelines", 0, "bundle"), "~nosuchuser"),
         ("a name over NAME_MAX", ("pipelines", 0, "bundle"), "a" * 300),
         ("a path over PATH_MAX", ("state_dir",), "a/" * 2100),
         ("a 4 KB broker URL", ("broker", "url"), "a/" * 2100)]


@pytest.mark.parametrize("what, where, value", FOUND, ids=[what for what, _, _ in FOUND])
def test_inputs_the_fuzzer_found(base, tmp_path, what, where, value):
    text = value
    if where is not None:
        tree = copy.deepcopy(base)
        parent = tree
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = value
        text = yaml.safe_dump(tree, allow_unicode=True).encode()
    with LogWatch() as logs:
        outcome = check_config(text, tmp_path / "edge.yaml", logs).check()
    assert outcome.error and len(outcome.error) < 1200, outcome
