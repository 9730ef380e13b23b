"""The front in MLflow: each trial run's Pareto tags, and the parent run's hypervolume, re-timed
front and device, written from the one :class:`~tradeoff_search.front.Front` of each change."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradeoff_search.front import Front, default_reference, is_feasible
from tradeoff_search.record._keys import CALIBRATION_ATTR, RETIMED_METRIC
from tradeoff_search.tracking._run_index import FRONT_TAGS, RunIndex

if TYPE_CHECKING:
    import optuna


class FrontTagger:
    """Keeps a study's runs in step with its front.

    Args:
        runs: where the study's runs are.
        hypervolume_reference: reference point of the ``hypervolume`` metric (default: see
            :func:`~tradeoff_search.front.default_reference`; none logged without one).
    """

    def __init__(self, runs: RunIndex, hypervolume_reference: list[float] | None) -> None:
        self.runs = runs
        self.hypervolume_reference = hypervolume_reference

    def reference(self, front: Front) -> list[float] | None:
        return self.hypervolume_reference or default_reference(front.metric_names)

    def update(self, study: optuna.Study, parent_id: str, front: Front, step: int, refresh: bool) -> None:
        """Write the tags of runs whose place in ``front`` changed, and the hypervolume at ``step``;
        ``refresh`` (at the study's end) reads every run again and brings every rank up to date."""
        by_number = {t.number: t for t in front.trials}
        self.runs.refresh_children(study, front.trials, everything=refresh)
        for number, child in self.runs.children.items():
            wanted = front_tags(by_number.get(number), front.ranks.get(number))
            changed = {key: value for key, value in wanted.items() if child.front_tags.get(key) != value}
            # Live (every worker keeps them): a run's tags as it joins or leaves the front. Ranks
            # below the front shift with most new trials (~10 runs a trial after 400): finish() writes them.
            if changed and (refresh or FRONT_TAGS[0] in changed):
                self.set_tags(child.run_id, changed)
                child.front_tags.update(changed)
        reference = self.reference(front)
        if reference is not None:
            self.runs.client.log_metric(parent_id, "hypervolume", front.hypervolume(reference), step=step)

    def log_retimed(self, parent_id: str, front: Front) -> None:
        """Latencies of the front re-timed side by side (see ``retime_front``), when the study has them."""
        if not front.retimed:
            return
        for number, value in front.retimed.items():
            child = self.runs.children.get(number)  # finish() has just read every run
            if child is not None:
                self.runs.client.log_metric(child.run_id, RETIMED_METRIC, value)
                self.runs.client.set_tag(child.run_id, "pareto_retimed", str(number in front.retimed_front).lower())
        self.set_tags(parent_id, {"pareto_retimed_size": str(len(front.retimed_front))})

    def log_device(self, study: optuna.Study, parent_id: str) -> None:
        """Tag the parent run with what the study's latencies were timed on (its calibration's
        device: ``local`` or a latency server's URL, and that machine's fingerprint)."""
        calibration = study.user_attrs.get(CALIBRATION_ATTR)
        if isinstance(calibration, dict):
            keys = ("device", "cpu", "logical_cores", "runtime_version")
            self.set_tags(parent_id, {f"latency.{key}": str(calibration[key]) for key in keys if key in calibration})

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set tags that another process of the same study may be setting at the same moment (the
        parent run's as two commands finish, a child's front tags as two workers finish trials):
        MLflow's SQL store inserts a tag it did not find, so two first writers collide
        (``UNIQUE constraint failed: tags.key, tags.run_uuid``), and the loser finds the winner's
        tag in place (for several tags, ``log_batch``'s SQL store retries such a collision itself).
        Both values come from the storage's front; the record check at the end of ``run`` (and
        ``sync``) sets the last word."""
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        client = self.runs.client
        try:
            if len(tags) == 1:  # on a database store set_tag costs 2/3 of a log_batch, which reads the run 3 times
                client.set_tag(run_id, *next(iter(tags.items())))
            else:  # one write for them all
                client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
        except MlflowException:
            if not tags.keys() <= client.get_run(run_id).data.tags.keys():
                raise


def front_tags(trial: optuna.trial.FrozenTrial | None, rank: int | None) -> dict[str, str]:
    """A run's Pareto tags (see :data:`FRONT_TAGS`) from its trial's rank in the front."""
    if rank is not None:
        shown = str(rank)
    elif trial is not None and trial.values is not None and not is_feasible(trial):
        shown = "infeasible"
    else:
        shown = "none"
    return dict(zip(FRONT_TAGS, (str(rank == 0).lower(), shown), strict=True))
