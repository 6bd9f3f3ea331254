"""Nearly three minutes at full rate (bench/soak.py runs an hour): no file descriptor or thread may leak.

The daemon runs PP-LCNet on a folder that a consumer recycles forever (each picture whose result arrives is
replaced under a new name); its fds and threads are read from /proc every 10 s. Memory is judged by the
bench only (an hour, after the first 5 minutes); no timings are asserted.
"""
from __future__ import annotations

import pytest

from .lcnet_bundle import lcnet_fp32_bundle
from .soak_support import Minute, ProcessSample, SoakRun, print_header, print_minute, verdict

SAMPLES, INTERVAL_S = 17, 10.0          # 170 s: with the network cut test, within the 230 s CI allows
BACKLOG = 48


@pytest.fixture(scope="module")
def lcnet_bundle(shared_dir, tmp_path_factory):
    return lcnet_fp32_bundle(tmp_path_factory.getbasetemp() / "lcnet")


def test_minutes_at_full_rate_leak_no_file_descriptors_or_threads(tmp_path, lcnet_bundle):
    samples = []
    with SoakRun(tmp_path, lcnet_bundle, backlog=BACKLOG, metrics_interval=INTERVAL_S) as run:
        for sample in run.samples(SAMPLES, INTERVAL_S):
            samples.append(sample)
    print("\n[soak]")
    print_header()
    for sample in samples:
        print_minute(sample)
    result = verdict(samples, settle=None)
    print(result.line)
    tail = run.log[-3000:]
    assert len(samples) == SAMPLES, tail                        # the daemon ran throughout
    assert run.recycler.results > 3 * BACKLOG                   # the folder was recycled several times over
    assert run.recycler.errors == 0 and samples[-1].spool_depth is not None
    assert result.passed, result.line
    assert run.exit_code == 0 and "Traceback" not in run.log, tail


def sample(fds: int, threads: int, rss_kb: int = 100_000) -> Minute:
    return Minute(0.0, ProcessSample(rss_kb, fds, threads), 0, 50.0, 0, 1.0)


def test_the_verdict_sees_a_descriptor_thread_or_memory_leak():
    steady = [sample(13, 7) for _ in range(10)]
    assert verdict(steady, settle=None).passed
    assert not verdict([sample(13 + n, 7) for n in range(10)], settle=None).passed
    assert not verdict([sample(13, 7 + n // 3) for n in range(10)], settle=None).passed
    assert verdict([sample(13, 7, 100_000 + 1000 * n) for n in range(10)], settle=5).passed          # +4 %
    assert not verdict([sample(13, 7, 100_000 + 2000 * n) for n in range(10)], settle=5).passed      # +8 %
