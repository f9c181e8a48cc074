"""Reproduce benchmarks/results/ (the README's performance table): ``python benchmarks/run.py``.

The same as ``eca-multi bench --reps 5 --out benchmarks/results``; extra arguments are passed on
(``--quick``, ``--backends torch,flax``, ``--no-models``, ``--reps N``, ``--out DIR``). Run it on
an otherwise idle machine: each cell is a ratio of interleaved timings, but a busy CPU still widens
the min-max spread.
"""

from __future__ import annotations

import sys

from eca_multi.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--reps", "5", "--out", "benchmarks/results", *sys.argv[1:]]))
