"""Lesson arithmetic checked without the kernel: the perf-event sampling bound (lesson 07) and
the log2 histogram buckets (lesson 05). Pure code: no root, no BCC, no kernel programs."""

from __future__ import annotations

import math

import pytest

from ebpf_lab.lessons.l05_maps.maps import bucket_bounds, log2_bucket
from ebpf_lab.lessons.l07_attach_points.attach_points import sampling_bound


def test_sampling_bound_formula():
    assert sampling_bound(997, 0, ncpus=2) == 4
    assert sampling_bound(4999, 500, ncpus=2) == 4 + math.ceil(4999 * 500 * 10e-6)
    assert sampling_bound(99, 100, ncpus=8) == 11


def test_log2_bucket_matches_bpf_log2l():
    assert [log2_bucket(n) for n in (0, 1, 2, 3, 4, 7, 8, 4095, 4096)] == [
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        12,
        13,
    ]
    assert bucket_bounds(1) == (0, 1)
    assert bucket_bounds(2) == (2, 3)
    assert bucket_bounds(13) == (4096, 8191)
    for n in (1, 5, 100, 65536, 2**40):
        low, high = bucket_bounds(log2_bucket(n))
        assert low <= n <= high
    with pytest.raises(ValueError):
        log2_bucket(-1)
    with pytest.raises(ValueError):
        bucket_bounds(65)
