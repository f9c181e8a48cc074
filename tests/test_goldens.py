"""The goldens are current, and the suite can fail: a changed weight or a flipped kernel in a
golden makes every framework's conformance check fail."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import require_backend

from eca_multi.conformance.backends import resolve_backends
from eca_multi.conformance.cases import get_case
from eca_multi.conformance.generate import (
    GOLDENS_DIR,
    _npz_bytes,
    check_goldens,
    golden_grads,
    golden_params,
    load_golden,
)
from eca_multi.conformance.runner import run_group

TAMPERED = ("c64_k3", "c256_k5")


def test_goldens_are_current():
    problems = check_goldens()
    assert problems == [], "\n".join(problems)


@pytest.fixture(scope="module")
def tampered_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("goldens")
    for p in GOLDENS_DIR.iterdir():
        shutil.copy(p, d / p.name)
    bumped = load_golden(TAMPERED[0], d)
    bumped["w"] = bumped["w"].copy()
    bumped["w"][0, 0, 0] += 1e-2  # one weight value changed
    (d / f"{TAMPERED[0]}.npz").write_bytes(_npz_bytes(bumped))
    flipped = load_golden(TAMPERED[1], d)
    flipped["w"] = flipped["w"][:, :, ::-1].copy()  # a flipped kernel (convolution, not xcorr)
    (d / f"{TAMPERED[1]}.npz").write_bytes(_npz_bytes(flipped))
    return d


def test_check_detects_tampering(tampered_dir):
    problems = "\n".join(check_goldens(tampered_dir))
    for case in TAMPERED:
        assert f"{case}: sha256" in problems, problems
        assert f"{case}/w: input differs" in problems, problems


@pytest.mark.parametrize("backend", ["torch", "keras-jax", "flax-nnx"])
def test_suite_fails_on_tampered_goldens(tampered_dir, backend):
    require_backend({"torch": "torch", "keras-jax": "keras", "flax-nnx": "flax"}[backend])
    (b,) = resolve_backends(backend)
    cases = [get_case(c) for c in (*TAMPERED, "c8_k3")]
    data = run_group([b], cases, goldens_dir=str(tampered_dir))
    by_case = {r["case"]: r for r in data["results"]}
    assert by_case["c8_k3"]["ok"], f"{backend}: untouched case should pass: {by_case['c8_k3']}"
    for case in TAMPERED:
        r = by_case[case]
        assert r["status"] == "ran" and not r["checks"]["y"]["ok"], (
            f"{backend}/{case}: a tampered golden passed: {r}"
        )


def test_golden_inputs_are_representable_in_their_dtype():
    from eca_multi.conformance.cases import CASES
    from eca_multi.conformance.generate import round_to_dtype

    for case in CASES:
        g = load_golden(case.id)
        for name in ("x", "g"):
            np.testing.assert_array_equal(round_to_dtype(g[name], case.dtype), g[name])
        for name, w in golden_params(g).items():
            np.testing.assert_array_equal(round_to_dtype(w, "float32"), w, err_msg=name)
        if case.attention in ("eca", "eca_ns"):  # every kernel row far from its own flip
            taps = golden_params(g)["conv.weight" if case.attention == "eca" else "weight"]
            taps = taps.reshape(-1, taps.shape[-1])
            asym = np.abs(taps - taps[:, ::-1]).max(axis=1).min()
            assert case.k == 1 or asym > 0.3, f"{case.id}: kernel near-symmetric ({asym:.2f})"


def test_family_goldens_hold_every_weight_and_gradient():
    from eca_multi.conformance.cases import family_cases
    from eca_multi.family import attention_config, attention_schema

    for case in family_cases():
        g = load_golden(case.id)
        want = attention_schema(attention_config(case.attention, **case.attention_kwargs()))
        params, grads = golden_params(g), golden_grads(g)
        assert set(params) == set(want) == set(grads), f"{case.id}: {sorted(params)}"
        for name, (shape, _) in want.items():
            assert params[name].shape == grads[name].shape == shape, f"{case.id}/{name}"
