"""The documented validation of a model: in its family, under controlled shifts, and on the
external family (`pipeline.external`), which no model trains on.

``python -m pipeline evaluate --run RUN --families`` scores the run on every set of
`validation_sets`, generating each the first time into ``data/validation`` (or
``--validation-dir``): the demo family's own test seed, every shift of
`pipeline.demo.generate.SHIFT_GRID`, and the external family. Each result goes to the run's
``test_sets/<name>.json`` (`pipeline.inference.evaluate.evaluate_run`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.inference.evaluate import evaluate_run
from pipeline.phantoms import family_label
from pipeline.runs import slug


@dataclass(frozen=True)
class ValidationSet:
    """A test set the product knows how to make: a family, its seed and size, and a shift."""

    family: str
    seed: int
    series: int
    shift: str = ""  # `pipeline.demo.generate.Shift.parse` text

    @property
    def name(self) -> str:
        return family_label({"family": self.family, "shift": _shift(self.shift).changes()}, "")

    def make(self, folder: Path, progress: Callable[[int, int], None] | None = None) -> None:
        if self.family == "external":
            from pipeline.external.generate import generate_external_data

            generate_external_data(folder, self.series, self.seed, progress=progress)
        else:
            from pipeline.demo.generate import generate_demo_data

            generate_demo_data(folder, self.series, self.seed, progress=progress, shift=_shift(self.shift))


def _shift(text: str):
    from pipeline.demo.generate import Shift

    return Shift.parse(text)


def validation_sets() -> list[ValidationSet]:
    """The documented validation: the demo family's test seed (150 series; in-family fit), each
    controlled shift of it (48 series of the same seed each: the same subjects, one change),
    and the external family (48 series)."""
    from pipeline.demo.generate import SHIFT_GRID

    shifts = [",".join(f"{k}={v:g}" for k, v in shift.changes().items()) for shift in SHIFT_GRID]
    return [ValidationSet("demo", 11, 150), *(ValidationSet("demo", 11, 48, text) for text in shifts),
            ValidationSet("external", 0, 48)]


def evaluate_families(run: str | os.PathLike, root: str | os.PathLike, flip: bool = True,
                      sets: list[ValidationSet] | None = None,
                      report: Callable[[str, str, int, int], None] | None = None,
                      scheduler: str | None = None, workers: int = 1) -> dict[str, dict]:
    """Score the run on every validation set, generating into ``root/<name>`` those not there yet.

    Args:
        report: called with (set name, "generating" or "scoring", done, total).
        scheduler, workers: where the series are scored (`pipeline.inference.evaluate.evaluate_run`).
    """
    results = {}
    for validation in sets or validation_sets():
        folder = Path(root) / slug(validation.name)
        if not (folder / "train.csv").is_file():
            validation.make(folder, None if report is None else
                            lambda done, total, name=validation.name: report(name, "generating", done, total))
        results[validation.name] = evaluate_run(
            run, folder, flip=flip, test_set=True, scheduler=scheduler, workers=workers,
            progress=None if report is None else lambda done, total, name=validation.name: report(name, "scoring", done, total))
    return results
