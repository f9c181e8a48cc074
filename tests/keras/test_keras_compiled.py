"""Keras ECA compiled vs eager (XLA, jax.jit, predict jit_compile) and the conformance adapter.

Measured on CPU (TF 2.21 / JAX 0.10.2, Keras 3.15) over the 37 conformance cases: 16-bit outputs
are bit-identical compiled vs eager; float32 outputs are bit-identical in only some cases (TF 3/30,
JAX 14/30) and otherwise differ by a few ulp (<= 2.1e-7 of max|y|) because XLA fuses the mean,
k-tap sum and gate and reorders the reductions; float32 kernel gradients (a sum over N*C terms)
differ by <= 2.9e-6 of max|dw|; 16-bit gradients differ by up to a few 16-bit ulps because eager
rounds every 16-bit intermediate while XLA evaluates fused 16-bit chains in float32 and rounds
once. Bit-equality is asserted where it was measured (16-bit y, the empty batch)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from common import assert_matches

from eca_multi.conformance.cases import get_case
from eca_multi.conformance.generate import load_golden
from eca_multi.keras import ECA
from eca_multi.keras._conformance import VARIANTS, run_case, setup

BACKEND = keras.backend.backend()
needs_jit = pytest.mark.skipif(
    BACKEND == "torch",
    reason="no compiled Keras-torch variant: Keras' torch jit_compile is torch.compile/inductor "
    "(~30 s per compile on this CPU); torch.compile is tested in tests/torch",
)
# largest allowed max|eager - compiled| / max|eager| (dtype, "y" or "grad") when not bit-equal
REL = {
    ("float32", "y"): 1e-6,  # XLA reorders float32 reductions; measured <= 2.1e-7
    ("float32", "grad"): 1e-5,  # dw sums N*C reordered terms; measured <= 2.9e-6
    ("bfloat16", "y"): 0.0,  # measured bit-identical (the output is rounded to bf16)
    ("bfloat16", "grad"): 1e-2,  # one bf16 ulp (2^-7) plus intermediates; measured <= 5.4e-3
    ("float16", "y"): 0.0,  # measured bit-identical
    ("float16", "grad"): 5e-3,  # a few fp16 ulps (2^-10); measured <= 3.5e-3
}
CASES = [
    "c64_k3_circular",
    "cl_c32_k3_circular_hard",
    "c8_k3_batch0",
    "bf16_cl_c256_k5_circular_hard",
    "fp16_c64_k3",
]


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max(initial=0.0) / max(np.abs(a).max(initial=0.0), 1e-30))


@needs_jit
@pytest.mark.parametrize("case_id", CASES)
def test_jit_vjp_matches_eager(case_id):
    case, golden = get_case(case_id), load_golden(case_id)
    eager, jit = run_case("eager", case, golden), run_case("jit", case, golden)
    for name, out in (("eager", eager), ("jit", jit)):
        out["dw"] = out["dparams"]["conv.weight"]  # the adapter returns every weight's gradient
        assert_matches(f"keras-{BACKEND}-{name}", case_id, out, golden, case.dtype)
        assert (out["y_dtype"], out["dx_dtype"]) == (case.dtype, case.dtype)
    if case.shape[0] == 0:
        assert all(np.array_equal(eager[n], jit[n]) for n in ("y", "dx", "dw")), case_id
    for name in ("y", "dx", "dw"):
        d = rel_diff(eager[name], jit[name])
        tol = REL[(case.dtype, "y" if name == "y" else "grad")]
        assert d <= tol, f"{case_id}/{name}: compiled vs eager rel diff {d:.2e} > {tol:.0e}"


@needs_jit
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_model_predict_jit_compile_matches_eager(dtype):
    inp = keras.Input((5, 5, 32), dtype=dtype)
    layer = ECA(channels=32, padding="circular", data_format="channels_last")
    model = keras.Model(inp, layer(inp))
    model.compile(jit_compile=True)
    x = keras.ops.cast(np.random.default_rng(0).standard_normal((4, 5, 5, 32)), dtype)
    eager = np.asarray(keras.ops.convert_to_numpy(layer(x))).astype(np.float64)
    got = np.asarray(model.predict(x, verbose=0)).astype(np.float64)
    if dtype == "float32":  # XLA may reorder the float32 mean (measured TF: 2.4e-7 abs)
        d = rel_diff(eager, got)
        assert d <= REL[(dtype, "y")], f"predict(jit_compile=True) vs eager: rel diff {d:.2e}"
    else:  # the result is rounded to 16 bits: measured bit-identical
        assert np.array_equal(eager, got), "bf16 predict(jit_compile=True) is not bit-exact"


def test_adapter_contract():
    info = setup()
    assert info["keras_backend"] == BACKEND and "device" in info
    case = get_case("bf16_c64_k3")
    out = run_case("eager", case, load_golden(case.id))
    assert set(out) == {"y", "dx", "dparams", "y_dtype", "dx_dtype"}
    assert out["y"].dtype == np.float64 and set(out["dparams"]) == {"conv.weight"}
    assert out["dparams"]["conv.weight"].shape == (1, 1, 3)
    assert (out["y_dtype"], out["dx_dtype"]) == ("bfloat16", "bfloat16")
    with pytest.raises(ValueError, match="unknown Keras conformance variant"):
        run_case("nnx", case, load_golden(case.id))
    if "jit" not in VARIANTS[BACKEND]:
        with pytest.raises(ValueError, match="unknown Keras conformance variant 'jit'"):
            run_case("jit", case, load_golden(case.id))
