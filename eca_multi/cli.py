"""The ``eca-multi`` command line (thin: the work lives in the library).

Usage::

    eca-multi conformance [--backends torch,keras-jax,...] [--impl SPEC ...] [--cases ...]
                          [--report PATH.md] [--json PATH]
    eca-multi goldens [--check] [--force]
    eca-multi kernel-size C [--gamma 2] [--b 1] [--min 1]
    eca-multi port SRC --arch NAME --to {canonical,torch,keras,flax} -o OUT [--verify] [--force]
    eca-multi port hf-hub:OWNER/REPO[@REV] --to ... -o OUT [--verify]   (arch from its config.json)
    eca-multi models
    eca-multi attention-table C [--kernel-size K] [--reduction 16] [--groups 4] [--spatial M]
    eca-multi export [--groups torch,keras-tensorflow,...] [--models layer,eca_resnet50]
                     [--json PATH] [--out DIR [--force]]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _conformance(a: argparse.Namespace) -> int:
    from .conformance.backends import resolve_backends
    from .conformance.cases import get_case
    from .conformance.generate import check_goldens
    from .conformance.runner import (
        format_matrix,
        format_report,
        grad_summary,
        impl_summary,
        run_impls,
        run_matrix,
        summarize,
    )
    from .weights.io import atomic_write_bytes

    impls = [s for spec in a.impl or [] for s in spec.split(",") if s.strip()]
    try:  # with --impl only, our backends run only when --backends names them
        names = a.backends if (a.backends is not None or not impls) else "none"
        backends = [] if names == "none" else resolve_backends(names)
        cases = [get_case(c) for c in a.cases.split(",")] if a.cases else None
    except (ValueError, KeyError) as e:
        print(f"eca-multi conformance: {e.args[0] if isinstance(e, KeyError) else e}",
              file=sys.stderr)  # fmt: skip
        return 2
    problems = check_goldens(a.goldens) if a.goldens is None else []
    for line in problems:
        print(f"golden problem: {line}")
    data: dict = {"results": [], "env": {}}
    if backends:
        names_text = ", ".join(b.name for b in backends)
        print(f"running {len(backends)} backends ({names_text}) ...", flush=True)
        data = run_matrix(backends, cases, a.goldens, jobs=a.jobs, progress=not a.quiet)
    if impls:
        print(f"running implementations {', '.join(impls)} ...", flush=True)
        extra = run_impls(impls, cases, a.goldens, jobs=a.jobs, progress=not a.quiet)
        data["results"] += extra["results"]
        data["impls"] = extra["impls"]
    print(format_matrix(data, backends, cases))
    if backends:
        print()
        print(grad_summary(data, backends))
    if impls:
        print()
        print("\n".join(impl_summary(data)))
    ok, lines = summarize(data, backends, require_all=a.require_all)
    ok = ok and not problems
    for line in lines:
        print(line)
    ran = [r for r in data["results"] if r.get("status") != "not_expressible"]
    bad = sum(not r.get("ok") for r in ran)
    n_ne = len(data["results"]) - len(ran)
    print(
        f"\nconformance: {len(ran) - bad} passed, {bad} failed, {n_ne} not expressible "
        f"({len(backends)} backends, {len(data.get('impls', {}))} implementations)"
    )
    if a.report:
        atomic_write_bytes(a.report, format_report(data, backends, cases).encode(), overwrite=True)
        print(f"report written to {a.report}")
    if a.json:
        payload = json.dumps({**data, "ok": ok, "golden_problems": problems}, indent=1)
        atomic_write_bytes(a.json, payload.encode(), overwrite=True)
        print(f"results written to {a.json}")
    return 0 if ok else 1


def _goldens(a: argparse.Namespace) -> int:
    from .conformance.generate import main as gen_main

    return gen_main((["--check"] if a.check else []) + (["--force"] if a.force else []))


def _kernel_size(a: argparse.Namespace) -> int:
    from .spec import kernel_size

    print(kernel_size(a.channels, a.gamma, a.b, a.min))
    return 0


def _port(a: argparse.Namespace) -> int:
    from .port import VerificationError, port

    try:
        report = port(
            a.src,
            a.arch,  # None: a hf-hub: name's config.json says (files: a clear error)
            a.to,
            a.output,
            verify=a.verify,
            force=a.force,
            kernel_sizes=a.kernel_sizes,  # the text; parsed once the architecture is known
            num_classes=a.num_classes,
            progress=not a.quiet,
        )
    except VerificationError as e:
        print(e.report)
        print(f"eca-multi port: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, ImportError) as e:  # the message says what and where
        print(f"eca-multi port: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(report)
    return 0


def _models(a: argparse.Namespace) -> int:
    from .port import models_table

    print(models_table())
    return 0


def _attention_table(a: argparse.Namespace) -> int:
    from .family import attention_table, format_attention_table

    try:
        rows = attention_table(
            a.channels,
            kernel_size=a.kernel_size,
            reduction=a.reduction,
            groups=a.groups,
            spatial=a.spatial,
        )
    except (TypeError, ValueError) as e:
        print(f"eca-multi attention-table: {e}", file=sys.stderr)
        return 2
    print(format_attention_table(rows, a.channels))
    print(
        f"\nEvery member also pools (C*M adds) and scales (C*M multiplies), M = {a.spatial} "
        "spatial positions; ECA's k comes from the paper's rule unless --kernel-size is given."
    )
    return 0


def _bench(a: argparse.Namespace) -> int:
    from .benchmark import format_table, resolve_groups, run_bench, write_results

    try:
        groups = resolve_groups(a.backends)
    except ValueError as e:
        print(f"eca-multi bench: {e}", file=sys.stderr)
        return 2
    data = run_bench(
        groups,
        quick=a.quick,
        reps=a.reps,
        models=not a.no_models,
        layers=not a.no_layers,
        jobs=a.jobs,
        progress=not a.quiet,
    )
    print(format_table(data["rows"]))
    for path in write_results(data, a.out, png=not a.no_plot):
        print(f"written: {path}")
    return 1 if data["errors"] else 0


def _export(a: argparse.Namespace) -> int:
    from .deploy import format_table, resolve_groups, run_export_matrix, summarize
    from .weights.io import atomic_write_bytes

    if a.out is not None and a.out.exists() and any(a.out.iterdir()) and not a.force:
        print(f"eca-multi export: {a.out} exists and is not empty; pass --force", file=sys.stderr)
        return 2
    try:
        groups = resolve_groups(a.groups)
        data = run_export_matrix(groups, a.models, jobs=a.jobs, out=a.out, progress=not a.quiet)
    except ValueError as e:
        print(f"eca-multi export: {e}", file=sys.stderr)
        return 2
    print(format_table(data["rows"]))
    ok, line = summarize(data["rows"])
    print(f"\nexport: {line}")
    if a.json:
        payload = json.dumps({**data, "ok": ok}, indent=1, default=str)
        atomic_write_bytes(a.json, payload.encode(), overwrite=True)
        print(f"results written to {a.json}")
    return 0 if ok else 1


def _quiet_option(p: argparse.ArgumentParser, *aliases: str) -> None:
    p.add_argument(
        "-q",
        "--quiet",
        *aliases,
        dest="quiet",
        action="store_true",
        help="no progress output (off a terminal progress is one line per stage)",
    )


def _version() -> str:
    from . import __version__

    return f"eca-multi {__version__}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eca-multi", description="ECA in PyTorch, Keras 3 and Flax")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("conformance", help="run the backend x case conformance matrix")
    c.add_argument(
        "--backends",
        default=None,
        help="eca-multi backends, comma-separated, or 'none' (default: all; with --impl: none)",
    )
    c.add_argument(
        "--impl",
        action="append",
        default=None,
        metavar="SPEC",
        help="also check an implementation: package.module:adapter, a name registered in the "
        "eca_multi.conformance entry point group, onnx:PATH, or 'all' (repeatable)",
    )
    c.add_argument(
        "--report", type=Path, default=None, help="write the case x implementation matrix (.md)"
    )
    c.add_argument("--cases", default=None, help="comma-separated case ids (default: all)")
    c.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    c.add_argument("--jobs", type=int, default=2, help="worker processes at once (default 2)")
    c.add_argument(
        "--require-all",
        action="store_true",
        help="fail when a backend's framework is not installed (make conformance and CI); "
        "without it those backends are listed as not installed and the rest decide",
    )
    _quiet_option(c)
    c.add_argument("--goldens", default=None, help=argparse.SUPPRESS)
    c.set_defaults(func=_conformance)
    g = sub.add_parser("goldens", help="verify (--check) or regenerate the conformance goldens")
    g.add_argument("--check", action="store_true")
    g.add_argument("--force", action="store_true")
    g.set_defaults(func=_goldens)
    k = sub.add_parser("kernel-size", help="the paper's kernel size for C channels")
    k.add_argument("channels", type=int)
    k.add_argument("--gamma", type=float, default=2)
    k.add_argument("--b", type=float, default=1)
    k.add_argument("--min", type=int, default=1)
    k.set_defaults(func=_kernel_size)
    p_ = sub.add_parser("port", help="port weights between torch, Keras, Flax and canonical files")
    p_.add_argument(
        "src", help="source weight file (format detected by content) or hf-hub:OWNER/REPO[@REV]"
    )
    p_.add_argument(
        "--arch",
        default=None,
        help="architecture (see `eca-multi models`); required for files, a hf-hub: source "
        "defaults to its config.json's",
    )
    p_.add_argument("--to", required=True, choices=("canonical", "torch", "keras", "flax"))
    p_.add_argument("-o", "--output", required=True, type=Path, help="output file")
    p_.add_argument("--verify", action="store_true", help="compare logits of source and output")
    p_.add_argument("--force", action="store_true", help="replace an existing output file")
    p_.add_argument(
        "--kernel-sizes",
        default=None,
        help="'checkpoint' (take the file's) or per-stage sizes like 3,5,5,7",
    )
    p_.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's")
    _quiet_option(p_, "--no-progress")
    p_.set_defaults(func=_port)
    m = sub.add_parser("models", help="list the architectures, their ECA kernel sizes and sizes")
    m.set_defaults(func=_models)
    b = sub.add_parser("bench", help="ECA vs the memory floor and ECA-ResNet50 vs ResNet-50")
    b.add_argument("--backends", default=None, help="torch,keras-tensorflow,keras-jax,...,flax")
    b.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run, not a timing)")
    b.add_argument("--reps", type=int, default=None, help="A/B pairs per cell (default 7; quick 3)")
    b.add_argument("--no-models", action="store_true", help="layer rows only")
    b.add_argument("--no-layers", action="store_true", help="model rows only")
    b.add_argument("--no-plot", action="store_true", help="no PNG (no matplotlib needed)")
    b.add_argument("--jobs", type=int, default=1, help="backends at once (>1 only for --quick)")
    b.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    _quiet_option(b)
    b.set_defaults(func=_bench)
    t = sub.add_parser(
        "attention-table", help="parameters and FLOPs of SE, SE-Var1/2/3, SE-GC, ECA-NS and ECA"
    )
    t.add_argument("channels", type=int)
    t.add_argument("--kernel-size", type=int, default=None, help="default: the paper's rule")
    t.add_argument("--reduction", type=int, default=16, help="SE's r (default 16)")
    t.add_argument("--groups", type=int, default=4, help="SE-GC's G (default 4)")
    t.add_argument("--spatial", type=int, default=1, help="spatial positions M")
    t.set_defaults(func=_attention_table)
    e = sub.add_parser("export", help="export matrix: every export path, run and checked")
    e.add_argument("--groups", default=None, help="comma-separated (default: all): torch, ...")
    e.add_argument("--models", default=None, help="layer and/or architectures (default: both)")
    e.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    e.add_argument("--jobs", type=int, default=2, help="worker processes at once (default 2)")
    e.add_argument("--out", type=Path, default=None, help="keep the exported files in OUT/<group>/")
    e.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    _quiet_option(e)
    e.set_defaults(func=_export)
    return p


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a path that is not UTF-8 prints as \xNN, never raises
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    a = build_parser().parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
