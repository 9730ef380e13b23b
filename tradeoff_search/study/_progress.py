"""The progress bar of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradeoff_search.study._tickets import finished_count

if TYPE_CHECKING:
    import optuna


class Progress:
    """A progress bar over the study's finished trials (whichever worker finished them)."""

    def __init__(self, study: optuna.Study, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.study = study
        # disable=None: no bar when stderr is not a terminal (a log file would get a line a second)
        self.bar = tqdm(total=total, initial=finished_count(study), disable=None if enabled else True, unit="trial")

    def refresh(self) -> None:
        self.bar.n = finished_count(self.study)
        self.bar.refresh()

    def close(self) -> None:
        self.refresh()
        self.bar.close()
