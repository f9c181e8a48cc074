"""Progress for long work (port, conformance, bench, export) through tqdm, the bar users know.

On a terminal: a tqdm bar on stderr. Off a terminal (CI logs, pipes): no bar, one line per
finished stage (``converting to keras: 130/130 tensors in 1.2 s``). ``enabled=False`` (the CLI's
``--quiet``) prints nothing. tqdm is an optional dependency of the core (the ``progress`` extra;
timm and huggingface_hub pull it in too): without it a terminal gets the stage lines as well.

Work that runs in a worker subprocess reports its steps with :func:`tick`; the parent passes a
file through :data:`PROGRESS_ENV` and follows it
(:func:`eca_multi.conformance.runner.run_json_worker`).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

__all__ = ["PROGRESS_ENV", "Stage", "read_ticks", "stage", "tick"]

PROGRESS_ENV = "ECA_MULTI_PROGRESS_FILE"  # a worker appends one line per finished step here


class Stage:
    """One stage of work: ``total`` steps of ``unit`` under a description.

    Use :func:`stage` to make one. ``update(n)`` advances, ``describe(text)`` renames the stage,
    ``close()`` ends it (off a terminal: prints the stage's one line).
    """

    def __init__(
        self, total: int, desc: str, unit: str, enabled: bool, file: IO[str] | None = None
    ) -> None:
        self.total, self.desc, self.unit, self.enabled = max(int(total), 0), desc, unit, enabled
        self.file = file if file is not None else sys.stderr
        self.n, self._t0, self._closed = 0, time.perf_counter(), False
        self._bar: Any = None
        if enabled and _isatty(self.file):
            try:
                from tqdm.auto import tqdm
            except ImportError:  # the stage lines below stand in
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=self.total, desc=desc, unit=f" {unit}", file=self.file, leave=True
                )

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def describe(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            seconds = time.perf_counter() - self._t0
            line = f"{self.desc}: {self.n}/{self.total} {self.unit} in {seconds:.1f} s"
            self.file.write(line + "\n")
            self.file.flush()

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stage(total: int, desc: str, *, unit: str = "steps", enabled: bool = True) -> Stage:
    """A progress stage on stderr: a tqdm bar on a terminal, one line when it ends elsewhere."""
    return Stage(total, desc, unit, enabled)


def tick(label: str = "", n: int = 1) -> None:
    """Report ``n`` finished steps to the parent process, if it follows this worker (else no-op)."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{n}\t{label}\n")


def read_ticks(path: str | os.PathLike[str], offset: int) -> tuple[int, int]:
    """(steps reported since byte ``offset``, the new offset) of a worker's progress file."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return 0, offset
    complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
    steps = sum(int(line.split(b"\t", 1)[0]) for line in complete.splitlines() if line)
    return steps, offset + len(complete)


def _isatty(f: IO[str]) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False
