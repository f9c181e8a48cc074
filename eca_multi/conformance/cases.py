"""The conformance case table: one row per (shape, layout, k, padding, gate, dtype) situation.

Coverage: 1-D / 2-D / 3-D; channels_first and channels_last; zeros and circular padding; sigmoid and
hard_sigmoid; C in {1, 3, 7, 8, 64, 256, 2048} (the kernel rule's k = 1 / 3 / 5 / 7); k = 1 and
k > C (both paddings); 1x1 and non-square spatial; batch 0, 1 and > 1; float32, bfloat16, float16;
inputs that saturate the gate. Kernels are seeded asymmetric random vectors, so a flipped kernel
fails. Goldens for each row are made by :mod:`eca_multi.conformance.generate` from the reference.

The rest of the paper's channel-attention family (:mod:`eca_multi.family`: SE, SE-Var1/2/3, SE-GC,
ECA-NS) has rows of its own (``attention`` other than "eca"): 2-D channels_first float32,
channels_last 1-D with the hard sigmoid, and 3-D in bfloat16 or float16, each kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CASES", "Case", "family_cases", "get_case"]


@dataclass(frozen=True)
class Case:
    """One conformance situation. ``shape`` is the full input shape in ``data_format``."""

    id: str
    shape: tuple[int, ...]
    k: int
    data_format: str = "channels_first"
    padding: str = "zeros"
    gate: str = "sigmoid"
    dtype: str = "float32"  # input / output dtype; the layer's weight stays float32
    x_scale: float = 1.0  # input amplitude
    saturate: bool = False  # |z| >= 0.2 * x_scale in every channel: the gate is flat (see generate)
    attention: str = "eca"  # the family member (eca_multi.family.ATTENTIONS)
    rd_channels: int | None = None  # se: hidden width
    groups: int | None = None  # se_gc

    @property
    def channels(self) -> int:
        return self.shape[1] if self.data_format == "channels_first" else self.shape[-1]

    @property
    def spatial_dims(self) -> int:
        return len(self.shape) - 2

    def layer_kwargs(self) -> dict[str, Any]:
        """Constructor arguments shared by every backend's ECA for this case."""
        return dict(
            channels=self.channels,
            kernel_size=self.k,
            padding=self.padding,
            gate=self.gate,
            data_format=self.data_format,
        )

    def attention_kwargs(self) -> dict[str, Any]:
        """Arguments of ``make_attention(case.attention, **kwargs)`` in every backend."""
        if self.attention == "eca":
            return self.layer_kwargs()
        kw = dict(channels=self.channels, gate=self.gate, data_format=self.data_format)
        if self.attention == "eca_ns":
            kw.update(kernel_size=self.k, padding=self.padding)
        elif self.attention == "se":
            kw.update(rd_channels=self.rd_channels)
        elif self.attention == "se_gc":
            kw.update(groups=self.groups)
        return kw

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _c(id: str, shape: Sequence[int], k: int, **kw: Any) -> Case:
    return Case(id, tuple(shape), k, **kw)


def family_cases(attention: str | None = None) -> tuple[Case, ...]:
    """The rows of one family member (None: every row whose attention is not "eca")."""
    return tuple(c for c in CASES if c.attention != "eca" and attention in (None, c.attention))


CF, CL = "channels_first", "channels_last"

CASES: tuple[Case, ...] = (
    # the kernel-size rule's channel counts, 2-D channels_first, zeros, sigmoid
    _c("c1_k1", (2, 1, 3, 3), 1),
    _c("c3_k1_1d", (2, 3, 10), 1),
    _c("c7_k1_3d", (2, 7, 2, 3, 4), 1),
    _c("c8_k3", (2, 8, 5, 7), 3),
    _c("c64_k3", (2, 64, 7, 7), 3),
    _c("c256_k5", (2, 256, 4, 6), 5),
    _c("c2048_k7", (2, 2048, 3, 2), 7),
    # k > C, both paddings (circular wraps modulo C, several times when k > 2C)
    _c("c3_k5_zeros", (2, 3, 4, 4), 5),
    _c("c3_k5_circular", (2, 3, 4, 4), 5, padding="circular"),
    _c("c1_k3_circular", (2, 1, 4, 4), 3, padding="circular"),
    _c("c1_k3_zeros", (2, 1, 4, 4), 3),
    _c("c2_k9_circular_1d", (3, 2, 5), 9, padding="circular"),
    # circular padding and the hard sigmoid gate
    _c("c64_k3_circular", (2, 64, 5, 5), 3, padding="circular"),
    _c("c64_k3_hard", (2, 64, 5, 5), 3, gate="hard_sigmoid"),
    _c("c256_k5_circular_hard_1d", (2, 256, 9), 5, padding="circular", gate="hard_sigmoid"),
    _c("c40_k9", (2, 40, 3, 3), 9),
    # 1-D and 3-D channels_first
    _c("c32_k3_1d", (2, 32, 17), 3),
    _c("c16_k3_3d", (2, 16, 3, 4, 5), 3),
    # channels_last
    _c("cl_c64_k3", (2, 7, 5, 64), 3, data_format=CL),
    _c("cl_c8_k3_1d", (3, 12, 8), 3, data_format=CL),
    _c("cl_c16_k3_3d", (2, 2, 3, 4, 16), 3, data_format=CL),
    _c(
        "cl_c32_k3_circular_hard",
        (2, 4, 6, 32),
        3,
        data_format=CL,
        padding="circular",
        gate="hard_sigmoid",
    ),
    _c("cl_c2048_k7", (2, 2, 3, 2048), 7, data_format=CL),
    # spatial and batch shapes
    _c("c64_k3_1x1", (4, 64, 1, 1), 3),
    _c("cl_c64_k3_1x1", (4, 1, 1, 64), 3, data_format=CL),
    _c("c32_k3_nonsquare", (2, 32, 3, 11), 3),
    _c("c128_k5_batch1", (1, 128, 5, 5), 5),
    _c("c8_k3_batch0", (0, 8, 3, 3), 3),
    # saturating gate: |z| >= 20 in every channel, sigmoid rounds to 0 / 1 in float32
    _c("c64_k3_saturate", (2, 64, 4, 4), 3, x_scale=100.0, saturate=True),
    _c("c64_k3_saturate_hard", (2, 64, 4, 4), 3, gate="hard_sigmoid", x_scale=100.0, saturate=True),
    # low precision: input/output in bf16 / fp16, weight float32
    _c("bf16_c64_k3", (2, 64, 5, 5), 3, dtype="bfloat16"),
    _c(
        "bf16_cl_c256_k5_circular_hard",
        (2, 3, 4, 256),
        5,
        data_format=CL,
        padding="circular",
        gate="hard_sigmoid",
        dtype="bfloat16",
    ),
    _c("bf16_c64_k3_saturate", (2, 64, 4, 4), 3, dtype="bfloat16", x_scale=100.0, saturate=True),
    _c("bf16_c2048_k7_1d", (2, 2048, 3), 7, dtype="bfloat16"),
    _c("fp16_c64_k3", (2, 64, 5, 5), 3, dtype="float16"),
    _c("fp16_c2048_k7_1d", (2, 2048, 3), 7, dtype="float16"),
    _c("fp16_cl_c16_k3_3d", (2, 2, 3, 4, 16), 3, data_format=CL, dtype="float16"),
)


def _family_cases() -> tuple[Case, ...]:
    """Three rows per non-ECA kind: 2-D CF float32, CL 1-D hard sigmoid, 3-D CF 16-bit."""
    rows: list[Case] = []
    extra: dict[str, list[dict[str, Any]]] = {  # (2-D C=64, 1-D C=32, 3-D C=16) per kind
        "se": [dict(rd_channels=4), dict(rd_channels=8), dict(rd_channels=4)],
        "se_gc": [dict(groups=4), dict(groups=8), dict(groups=2)],
        "eca_ns": [dict(k=3), dict(k=5, padding="circular"), dict(k=3)],
    }
    low = {"se": "bfloat16", "se_var1": "float16", "se_var2": "bfloat16"}
    for kind in ("se", "se_var1", "se_var2", "se_var3", "se_gc", "eca_ns"):
        a, b, c = extra.get(kind, [{}, {}, {}])
        k = {"k": 1}  # unused by every kind but eca_ns
        dt = low.get(kind, "float16" if kind == "se_var3" else "bfloat16")
        rows += [
            _c(f"{kind}_c64", (2, 64, 5, 5), **{**k, **a}, attention=kind),
            _c(
                f"{kind}_cl_c32_1d_hard",
                (3, 9, 32),
                **{**k, **b},
                data_format=CL,
                gate="hard_sigmoid",
                attention=kind,
            ),
            _c(
                f"{kind}_{_SHORT[dt]}_c16_3d",
                (2, 16, 3, 4, 5),
                **{**k, **c},
                dtype=dt,
                attention=kind,
            ),
        ]
    return tuple(rows)


_SHORT = {"bfloat16": "bf16", "float16": "fp16"}
CASES = CASES + _family_cases()

_BY_ID = {c.id: c for c in CASES}
assert len(_BY_ID) == len(CASES), "duplicate case ids"


def get_case(case_id: str) -> Case:
    try:
        return _BY_ID[case_id]
    except KeyError:
        raise KeyError(f"unknown conformance case {case_id!r}") from None
