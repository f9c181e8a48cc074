"""The framework-free core: kernel-size rule, argument checks, input checks."""

from __future__ import annotations

import math

import pytest
from common import BAD_CONSTRUCTOR

from eca_multi import kernel_size, make_config
from eca_multi.spec import check_input, padded_channel_index


def _paper_rule(c, gamma=2, b=1):
    # the paper's text, written independently of eca_multi.spec
    t = int(abs((math.log(c, 2) + b) / gamma))
    return t if t % 2 else t + 1


@pytest.mark.parametrize("c", [1, 2, 3, 7, 8, 15, 16, 31, 32, 64, 128, 256, 512, 1024, 2048, 4096])
def test_kernel_size_matches_paper_rule(c):
    assert kernel_size(c) == _paper_rule(c), f"C={c}"


@pytest.mark.parametrize("c,k", [(1, 1), (3, 1), (7, 1), (8, 3), (64, 3), (256, 5), (2048, 7)])
def test_kernel_size_known_values(c, k):
    assert kernel_size(c) == k


@pytest.mark.parametrize("c", [1, 3, 7, 8, 64, 256, 2048])
def test_kernel_size_timm_clamp(c):
    # timm: max(odd(int(abs(log2(C) + beta) / gamma)), 3)
    assert kernel_size(c, min_size=3) == max(_paper_rule(c), 3)


def test_kernel_size_gamma_b():
    assert kernel_size(256, gamma=1, b=0) == 9  # t = 8 -> 9
    assert kernel_size(64, gamma=3, b=2) == 3  # t = 2 -> 3


def test_explicit_kernel_size_wins_over_rule():
    cfg = make_config(channels=2048, kernel_size=3)
    assert cfg.kernel_size == 3 and cfg.weight_shape == (1, 1, 3)


def test_rule_with_min_kernel_size():
    assert make_config(channels=8, min_kernel_size=5).kernel_size == 5


def test_channels_optional_with_explicit_k():
    cfg = make_config(kernel_size=5)
    check_input(cfg, (2, 123, 4, 4), is_floating=True, dtype="float32", backend="t")


@pytest.mark.parametrize(
    "name,kwargs,exc,match", BAD_CONSTRUCTOR, ids=[b[0] for b in BAD_CONSTRUCTOR]
)
def test_bad_constructor(name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_config(**kwargs)


def test_check_input_allows_unknown_dims_and_empty_batch():
    cfg = make_config(channels=8)
    check_input(cfg, (None, 8, None, None), is_floating=True, dtype="float32", backend="t")
    check_input(cfg, (0, 8, 3, 3), is_floating=True, dtype="float32", backend="t")


def test_config_round_trip_and_describe():
    cfg = make_config(channels=64, padding="circular", gate="hard_sigmoid")
    assert make_config(**cfg.constructor_args()) == cfg
    assert cfg.describe() == (
        "ECA(channels=64, kernel_size=3, padding='circular', gate='hard_sigmoid', "
        "data_format='channels_first')"
    )


@pytest.mark.parametrize("c,k", [(5, 3), (3, 5), (1, 3), (2, 9)])
def test_padded_channel_index_is_modular(c, k):
    idx = padded_channel_index(c, k)
    p = (k - 1) // 2
    assert list(idx) == [(i - p) % c for i in range(c + 2 * p)]
