"""Flax NNX interpreter of :class:`eca_multi.graph.Graph`: timm's NFNet-L, ByobNet and pruned
ECA-ResNets on NHWC input.

The modules sit in a tree that mirrors the torch module paths (``stages.0.0.conv1`` is
``model.stages["0"]["0"].conv1``...: attribute ``"0"`` of :class:`Tree` nodes), so
``nnx.iter_modules`` paths joined by dots are the canonical names, as for the ResNets
(:mod:`eca_multi.flax.io`). :class:`StdConv` is timm's ``ScaledStdConv2d``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from .. import archs
from ..graph import GraphArch, Node
from ..weights.layouts import Layout
from .models import _AvgPoolCeil, _Factory, _max_pool

__all__ = ["GraphNet", "StdConv", "Tree"]


class Tree(nnx.Module):
    """A namespace of child modules (one torch module path segment each)."""

    def __getitem__(self, key: str) -> nnx.Module:
        return getattr(self, key)


class StdConv(nnx.Module):
    """timm's ``ScaledStdConv2d`` on NHWC input (see :class:`eca_multi.keras.graph.StdConv2D`).

    Variables: ``kernel`` (kh, kw, in / groups, out), ``bias`` (out,), ``gain`` (out, 1, 1, 1)
    (torch's shape).
    """

    def __init__(self, n: Node, make: _Factory) -> None:
        k, cin, cout, groups = n["k"], n["cin"], n["cout"], n["groups"]
        self.stride, self.pad, self.groups = n["stride"], n["pad"], groups
        self.eps = n["ws"]["eps"]
        self.scale = n["ws"]["gamma"] * float(k * k * (cin // groups)) ** -0.5
        pdt, rngs = make.param_dtype, make.rngs
        init = make._init(nnx.initializers.variance_scaling(1.0, "fan_in", "normal"))
        zeros, ones = make._init(nnx.initializers.zeros), make._init(nnx.initializers.ones)
        self.kernel = nnx.Param(init(rngs.params(), (k, k, cin // groups, cout), pdt))
        self.bias = nnx.Param(zeros(rngs.params(), (cout,), pdt))
        self.gain = nnx.Param(ones(rngs.params(), (cout, 1, 1, 1), pdt))
        self.dtype = make.dtype

    def standardized_kernel(self) -> jax.Array:
        w = self.kernel[...].astype(jnp.float32)
        mean = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
        var = jnp.mean(jnp.square(w - mean), axis=(0, 1, 2), keepdims=True)
        g = self.gain[...].astype(jnp.float32).reshape(1, 1, 1, -1) * self.scale
        return (w - mean) * lax.rsqrt(var + self.eps) * g

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        y = lax.conv_general_dilated(
            x.astype(dtype),
            self.standardized_kernel().astype(dtype),
            (self.stride, self.stride),
            ((self.pad, self.pad), (self.pad, self.pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
        )
        return y + self.bias[...].astype(dtype)

    def canonical_variables(self) -> dict[str, tuple[nnx.Variable, Layout]]:
        return {
            "weight": (self.kernel, Layout.CONV2D),
            "bias": (self.bias, Layout.NONE),
            "gain": (self.gain, Layout.NONE),
        }


def _conv(n: Node, make: _Factory) -> nnx.Module:
    if n["ws"]:
        return StdConv(n, make)
    p = n["pad"]
    return nnx.Conv(
        n["cin"],
        n["cout"],
        (n["k"], n["k"]),
        n["stride"],
        padding=((p, p), (p, p)),
        feature_group_count=n["groups"],
        use_bias=n["bias"],
        dtype=make.dtype,
        param_dtype=make.param_dtype,
        rngs=make.rngs,
        kernel_init=make._init(nnx.initializers.variance_scaling(2.0, "fan_out", "normal")),
        bias_init=make._init(nnx.initializers.zeros),
    )


def _module(n: Node, make: _Factory) -> nnx.Module:
    if n.op == "conv":
        return _conv(n, make)
    if n.op == "bn":
        if n["eps"] != 1e-5:
            raise ValueError(f"{n.name}: BatchNorm eps {n['eps']} (the Flax zoo's is 1e-5)")
        return make.bn(n["channels"])
    if n.op == "eca":
        return make.eca(n["channels"], n["k"])
    if n.op == "linear":
        return make.linear(n["cin"], n["cout"])
    raise ValueError(f"the Flax graph interpreter has no weighted operation {n.op!r}")


_ACTS = {"relu": jax.nn.relu, "silu": jax.nn.silu}


class GraphNet(nnx.Module):
    """A graph architecture (:class:`eca_multi.graph.GraphArch`) as an NNX module.

    Built by :func:`eca_multi.flax.models.create_model`; NHWC input, logits (N, num_classes).
    Only timm's own ECA can sit in these models (``attention="eca"``).
    """

    def __init__(
        self,
        arch: GraphArch,
        num_classes: int,
        kernel_sizes: Iterable[int],
        make: _Factory,
        attention: str | None = "eca",
        attention_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        arch.blocks(kernel_sizes, attention, attention_kwargs)  # clear error for another kind
        self.arch_name, self.num_classes = arch.name, num_classes
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.attention, self._attention_args = "eca", ()
        for n in arch.graph(num_classes, self.kernel_sizes).weighted():
            *parents, leaf = n.name.split(".")
            node: nnx.Module = self
            for part in parents:
                if not hasattr(node, part):
                    setattr(node, part, Tree())
                node = getattr(node, part)
            setattr(node, leaf, _module(n, make))

    @property
    def attention_kwargs(self) -> dict[str, Any]:
        return {}

    def _get(self, path: str) -> nnx.Module:
        node: Any = self
        for part in path.split("."):
            node = getattr(node, part)
        return node

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits of NHWC ``x``; ``rngs`` is accepted for one API (these models use none)."""
        arch = cast(GraphArch, archs.get_arch(self.arch_name))  # built from a GraphArch
        graph = arch.graph(self.num_classes, self.kernel_sizes)
        values = {"input": x}
        for n in graph.nodes:
            a = values[n.inputs[0]]
            if n.name:  # conv, bn, eca, linear: the module at its torch path
                y = self._get(n.name)(a)
            elif n.op == "act":
                y = _ACTS[n["fn"]](a)
            elif n.op == "scale":
                y = a * jnp.asarray(n["value"], a.dtype)
            elif n.op == "add":
                y = a + values[n.inputs[1]]
            elif n.op == "maxpool":
                y = _max_pool(a, n["k"], n["stride"], n["pad"])
            elif n.op == "avgpool_ceil":
                if (n["k"], n["stride"]) != (2, 2):
                    raise ValueError(f"{n.output}: only AvgPool2d(2, 2, ceil_mode) is built")
                y = _AvgPoolCeil()(a)
            elif n.op == "mean":
                y = jnp.mean(a, axis=(1, 2))
            else:
                raise ValueError(f"the Flax graph interpreter has no operation {n.op!r}")
            values[n.output] = y
        return values[graph.output]
