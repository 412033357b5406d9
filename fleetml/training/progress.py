"""Progress bars for long training and forecasting commands, on stderr only.

A bar is shown when stderr is a terminal, or when the user asks with ``--progress``
(``--no-progress`` hides it). Bars never touch stdout, whose last line is the command's JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

T = TypeVar("T")
R = TypeVar("R")

#: ``--progress/--no-progress`` for every long command; unset means "when stderr is a terminal".
PROGRESS_OPTION = click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: only when stderr is a terminal).",
)


def progress_enabled(flag: bool | None) -> bool:
    """The user's choice, else whether stderr is a terminal."""
    if flag is not None:
        return bool(flag)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class StageProgress:
    """A bar over a fixed list of named stages; call it with a stage's name when it starts.

    Used as the ``progress`` callback of :func:`fleetml.training.anomaly.train_anomaly` and
    :func:`fleetml.training.risk.train_risk`: ``StageProgress(STAGES, enabled=True)("fit")``.
    """

    def __init__(self, stages: Sequence[str], *, enabled: bool, desc: str = "train"):
        from tqdm import tqdm

        self.stages = list(stages)
        self.desc = desc
        self.bar = tqdm(
            total=len(self.stages),
            desc=desc,
            unit="step",
            file=sys.stderr,
            disable=not enabled,
            leave=True,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]",
        )
        self._done = 0

    def __call__(self, stage: str) -> None:
        # Stages passed so far are complete; the bar shows the one now running.
        if stage in self.stages:
            target = self.stages.index(stage)
            if target > self._done:
                self.bar.update(target - self._done)
                self._done = target
        self.bar.set_description(f"{self.desc}: {stage}")

    def close(self) -> None:
        if self._done < len(self.stages):
            self.bar.update(len(self.stages) - self._done)
            self._done = len(self.stages)
        self.bar.set_description(self.desc)
        self.bar.close()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        else:  # leave the bar where it stopped: it shows which stage failed
            self.bar.close()


def run_with_progress(
    func: Callable[[T], R],
    items: Sequence[T],
    *,
    enabled: bool,
    desc: str,
    chunks: int = 20,
    **parallel: Any,
) -> list[R]:
    """:func:`fleetml.parallel.run_parallel` in up to ``chunks`` slices, with a bar that moves as
    series *finish* (not as they are handed out). Results keep the items' order."""
    from tqdm import tqdm

    from fleetml.parallel import run_parallel

    items = list(items)
    if not enabled:
        return run_parallel(func, items, **parallel)
    size = max(1, -(-len(items) // max(chunks, 1)))
    out: list[R] = []
    with tqdm(total=len(items), desc=desc, unit="series", file=sys.stderr, leave=True) as bar:
        for start in range(0, len(items), size):
            part = items[start : start + size]
            out += run_parallel(func, part, **parallel)
            bar.update(len(part))
    return out
