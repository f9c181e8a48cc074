"""The NumPy reference: analytic backward vs finite differences, and direct checks of the spec."""

from __future__ import annotations

import numpy as np
import pytest
from common import BAD_INPUTS, eca_examples
from hypothesis import given, settings

from eca_multi import reference

OPTIONS = [
    (pad, gate, df)
    for pad in ("zeros", "circular")
    for gate in ("sigmoid", "hard_sigmoid")
    for df in ("channels_first", "channels_last")
]


def _numeric_grads(x, w, g, kw, eps=1e-6):
    f = lambda x, w: float((g * reference.forward(x, w, **kw)).sum())
    dx = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        dx[i] = (f(x + e, w) - f(x - e, w)) / (2 * eps)
    dw = np.zeros_like(w)
    for i in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[i] = eps
        dw[i] = (f(x, w + e) - f(x, w - e)) / (2 * eps)
    return dx, dw


@pytest.mark.parametrize("padding,gate,data_format", OPTIONS)
@pytest.mark.parametrize(
    "shape_cf,k",
    [((2, 5, 3, 4), 3), ((2, 3, 4), 5), ((1, 4, 2, 3, 2), 7), ((2, 6, 3), 1), ((1, 1, 3), 3)],
)
def test_backward_matches_finite_differences(padding, gate, data_format, shape_cf, k):
    rng = np.random.default_rng(k * 100 + len(shape_cf))
    shape = (
        shape_cf if data_format == "channels_first" else (shape_cf[0], *shape_cf[2:], shape_cf[1])
    )
    x, g = rng.normal(size=shape), rng.normal(size=shape)
    w = rng.normal(size=(1, 1, k))
    kw = dict(padding=padding, gate=gate, data_format=data_format)
    dx, dw = reference.backward(x, w, g, **kw)
    ndx, ndw = _numeric_grads(x, w, g, kw)
    err = max(np.abs(dx - ndx).max(), np.abs(dw - ndw).max())
    assert err < 1e-7, f"reference/{padding}/{gate}/{data_format}/{shape}/k={k}: max_abs={err:.2e}"


def _direct(x, w, padding, gate):
    """The block written out loop by loop from the issue's definition (channels_first)."""
    n, c = x.shape[:2]
    k = w.shape[-1]
    p = (k - 1) // 2
    y = x.reshape(n, c, -1).mean(-1)
    out = np.empty_like(x)
    for i in range(n):
        for ch in range(c):
            z = 0.0
            for j in range(k):
                src = ch + j - p
                if padding == "circular":
                    z += w[0, 0, j] * y[i, src % c]
                elif 0 <= src < c:
                    z += w[0, 0, j] * y[i, src]
            s = 1 / (1 + np.exp(-z)) if gate == "sigmoid" else min(max(z + 3, 0), 6) / 6
            out[i, ch] = x[i, ch] * s
    return out


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("c,k", [(6, 3), (3, 5), (1, 3), (10, 7)])
def test_forward_matches_loop_definition(padding, gate, c, k):
    rng = np.random.default_rng(c + k)
    x, w = rng.normal(size=(2, c, 3, 2)) * 3, rng.normal(size=(1, 1, k))
    got = reference.forward(x, w, padding=padding, gate=gate)
    np.testing.assert_allclose(got, _direct(x, w, padding, gate), rtol=1e-13, atol=1e-15)


def test_no_flip_cross_correlation():
    # one-hot kernel at tap 0 reads channel c - 1 (cross-correlation), not c + 1 (convolution)
    x = np.zeros((1, 3, 1, 1))
    x[0, 0] = 1.0
    w = np.array([[[1.0, 0.0, 0.0]]])
    y = reference.forward(x + 1.0, w) / (x + 1.0)
    expected = reference.gate(np.array([0.0, 2.0, 1.0]), "sigmoid")
    np.testing.assert_allclose(y[0, :, 0, 0], expected, rtol=1e-14)


def test_channels_last_equals_channels_first():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 6, 3, 4)), rng.normal(size=(1, 1, 3))
    cf = reference.forward(x, w)
    cl = reference.forward(np.moveaxis(x, 1, -1), w, data_format="channels_last")
    np.testing.assert_array_equal(np.moveaxis(cl, -1, 1), cf)


def test_empty_batch_and_nan():
    w = np.array([[[0.2, 0.5, -0.3]]])
    out = reference.forward(np.zeros((0, 4, 2, 2)), w)
    assert out.shape == (0, 4, 2, 2)
    x = np.ones((1, 6, 2, 2))
    x[0, 2, 1, 1] = np.nan
    nan_channels = np.isnan(reference.forward(x, w)).any(axis=(2, 3))[0]
    assert list(np.flatnonzero(nan_channels)) == [1, 2, 3]


@pytest.mark.parametrize(
    "name,kwargs,shape,dtype,exc,match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_inputs(name, kwargs, shape, dtype, exc, match):
    x = np.zeros(shape, dtype=dtype)
    with pytest.raises(exc, match=match):
        reference.ECA(**kwargs)(x)


def test_weight_must_be_canonical():
    with pytest.raises(ValueError, match=r"\(1, 1, k\)"):
        reference.forward(np.ones((1, 4, 2, 2)), np.ones(3))


@settings(max_examples=20, deadline=None)
@given(eca_examples())
def test_reference_class_equals_functions(ex):
    layer = reference.ECA(**ex["kwargs"], weight=ex["w"])
    kw = {k: v for k, v in ex["kwargs"].items() if k != "kernel_size"}
    np.testing.assert_array_equal(layer(ex["x"]), reference.forward(ex["x"], ex["w"], **kw))
