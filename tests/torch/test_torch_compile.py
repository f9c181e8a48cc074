"""torch.compile(fullgraph=True) of the ECA layer: no graph break, and close to eager.

Compiles are expensive on CPU (seconds each), so there are only a few; the conformance matrix
(backend "torch-compile") runs the compiled layer on every case against the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import assert_matches

from eca_multi import reference
from eca_multi.conformance.generate import round_to_dtype
from eca_multi.torch import ECA

CASES = {
    "zeros_sigmoid_2d": (dict(channels=64), (2, 64, 7, 7)),
    # channels=None: the circular index is built per call from padded_channel_index
    "circular_hard_cl_3d": (
        dict(kernel_size=5, padding="circular", gate="hard_sigmoid", data_format="channels_last"),
        (2, 3, 4, 5, 24),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_compiled_close_to_eager_and_reference(name):
    kwargs, shape = CASES[name]
    rng = np.random.default_rng(11)
    k = ECA(**kwargs).config.kernel_size
    w = round_to_dtype(rng.uniform(-1, 1, (1, 1, k)), "float32")
    x = round_to_dtype(rng.standard_normal(shape), "float32")
    g = round_to_dtype(rng.standard_normal(shape), "float32")
    layer = ECA(**kwargs)
    layer.load_state_dict({"conv.weight": torch.as_tensor(w, dtype=torch.float32)})
    torch.compiler.reset()
    compiled = torch.compile(lambda t: layer(t), fullgraph=True, dynamic=False)

    out = {}
    for variant, fn in (("eager", layer), ("compile", compiled)):
        xt = torch.as_tensor(x, dtype=torch.float32).requires_grad_(True)
        y = fn(xt)
        dx, dw = torch.autograd.grad(y, (xt, layer.conv.weight), torch.as_tensor(g).float())
        out[variant] = {
            n: t.detach().double().numpy() for n, t in (("y", y), ("dx", dx), ("dw", dw))
        }
    kw = {key: v for key, v in kwargs.items() if key not in ("channels", "kernel_size")}
    ref = {"y": reference.forward(x, w, **kw)}
    ref["dx"], ref["dw"] = reference.backward(x, w, g, **kw)
    for variant in out:
        assert_matches(f"torch-{variant}", name, out[variant], ref)

    # NOT bit-equal on CPU (measured): inductor fuses the spatial mean, the k-tap conv and the
    # gate into generated C++ loops and sums in another order (the mean over H*W, dw over N*C),
    # so y / dx differ by 1-2 float32 ulp (~1e-7..2.4e-7 at |y| ~ 3) and dw by ~1e-6 relative.
    for n in ("y", "dx", "dw"):
        a, b = out["compile"][n], out["eager"][n]
        scale = float(np.abs(b).max())
        d = float(np.abs(a - b).max())
        exact = np.array_equal(a, b)
        assert exact or d <= 2e-6 * scale, (
            f"{name}/{n}: compiled vs eager max_abs={d:.2e} > 2e-6 x max|eager| ({scale:.2e}); "
            "expected only float32 reordering differences"
        )


def test_compiled_fullgraph_bad_input_reports_the_shared_error():
    """Under fullgraph=True dynamo wraps a raise in traced code as torch._dynamo.exc.Unsupported
    ("Observed exception", a RuntimeError) whose text carries our ValueError's message; without
    fullgraph the ValueError itself propagates. Only tracing runs here: nothing is compiled."""
    layer = ECA(channels=8)
    torch.compiler.reset()
    compiled = torch.compile(layer, fullgraph=True, dynamic=False)
    with pytest.raises(
        (ValueError, RuntimeError), match="built for 8 channels but the input has 6"
    ):
        compiled(torch.zeros(2, 6, 4, 4))
