"""Study specs: a TOML file turned into a validated, frozen :class:`StudySpec`.

Validation is declarative (in the spirit of scikit-learn's ``_param_validation``): every field
of every section names the rule that parses it (see ``tradeoff_search.rules``), each section
checks its keys together, and the spec checks what spans sections; every failure is a
:class:`~tradeoff_search.rules.SpecError` that names the file, the key, the value and what was
expected.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff_search.data import DataSection
from tradeoff_search.record._keys import LATENCY_METRIC, MODEL_BYTES, RAM_BYTES
from tradeoff_search.rules import Categorical, SpecError, parse_section, show, spec_rule
from tradeoff_search.spec._memory import check_memory
from tradeoff_search.spec._sections import (
    FAMILIES,
    FAMILY_RANKS,
    KB,
    BudgetSection,
    LatencySection,
    ModelSection,
    ObjectivesSection,
    OptimizerSection,
    StudySection,
    TrackingSection,
    TrainingSection,
)

if TYPE_CHECKING:
    from tradeoff_search.spec._builder_source import BuilderSource

DEFAULT_REFERENCE_LATENCY_MS = 100.0

_SECTIONS: dict[str, type] = {
    "study": StudySection,
    "data": DataSection,
    "objectives": ObjectivesSection,
    "latency": LatencySection,
    "budget": BudgetSection,
    "model": ModelSection,
    "optimizer": OptimizerSection,
    "training": TrainingSection,
    "tracking": TrackingSection,
}


@dataclass(frozen=True)
class StudySpec:
    """A validated, immutable study specification.

    Load one with :meth:`StudySpec.load` (a TOML file) or :meth:`StudySpec.from_dict`; every
    invalid input raises :class:`SpecError` naming the file, the key and the value.

    Example:
        >>> spec = StudySpec.load("studies/digits.toml")  # doctest: +SKIP
        >>> spec.study.n_trials  # doctest: +SKIP
        30
    """

    path: Path
    study: StudySection
    data: DataSection
    objectives: ObjectivesSection = ObjectivesSection()
    latency: LatencySection = LatencySection()
    budget: BudgetSection = BudgetSection()
    model: ModelSection = ModelSection()
    optimizer: OptimizerSection = OptimizerSection()
    training: TrainingSection = TrainingSection()
    tracking: TrackingSection = TrackingSection()
    digest: str = ""

    @classmethod
    def load(cls, path: str | Path) -> StudySpec:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise SpecError(path, "(file)", str(path), f"a readable TOML file ({error.strerror})") from None
        try:
            document = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise SpecError(path, "(file)", str(path), f"valid TOML ({error})") from None
        return cls.from_dict(document, path=path, digest=hashlib.sha256(raw).hexdigest()[:16])

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], path: str | Path = "<dict>", digest: str = "") -> StudySpec:
        path = Path(path)
        for section, table in document.items():
            if section not in _SECTIONS:
                raise SpecError(path, section, table, f"one of the sections {sorted(_SECTIONS)}")
        if "data" not in document:
            raise SpecError(path, "data", None, "a [data] table (this section is required)")
        parsed = {name: parse_section(kind, document.get(name, {}), path, name) for name, kind in _SECTIONS.items()}
        if not parsed["study"].name:
            parsed["study"] = dataclasses.replace(parsed["study"], name=path.stem)
        if not parsed["tracking"].experiment:
            parsed["tracking"] = dataclasses.replace(parsed["tracking"], experiment=parsed["study"].name)
        if not digest:
            digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]
        parsed["model"] = _with_builder(parsed["model"], document.get("model", {}), path)
        parsed["latency"], parsed["budget"] = _one_latency_budget(parsed["latency"], parsed["budget"], path)
        for section in parsed.values():
            section.check(path)
        spec = cls(path=path, digest=digest, **parsed)
        spec._check_across_sections()
        spec._check_builders()
        return spec

    def _check_across_sections(self) -> None:
        """One reference number per objective; families that take the data's examples; a space
        whose largest model fits in memory."""
        reference = self.tracking.hypervolume_reference
        if reference is not None and len(reference) != len(self.metric_names):
            raise SpecError(self.path, "tracking.hypervolume_reference", list(reference),
                            f"one number for each of {self.metric_names}")  # fmt: skip
        rank = self.data.rank
        for family in self.model.families.choices:
            if FAMILY_RANKS.get(family, rank) != rank:
                needs = f"{family} needs data.input_shape with {FAMILY_RANKS[family]} dimensions"
                raise SpecError(self.path, "model.families", list(self.model.families.choices),
                                f"families that take inputs of {rank} dimensions ({needs})")  # fmt: skip
        check_memory(self.path, self.model, self.data, max(self.training.batch_size.choices))

    def _check_builders(self) -> None:
        """Every family is built in or named in ``[model.builders]``; every builder's module or
        file exists (it is imported only when a study runs: see ``tradeoff_search.spec._builder_source``)."""
        model, named = self.model, dict(self.model.builders)
        for family in model.families.choices:
            if family not in FAMILIES and family not in named:
                expected = f"families among {show(list(FAMILIES))} or the names of [model.builders]"
                raise SpecError(self.path, "model.families", list(model.families.choices),
                                f"{expected} ({show(family)} is neither)")  # fmt: skip
        self.builder_sources  # noqa: B018 - resolving them is the check

    @functools.cached_property
    def builder_sources(self) -> dict[str, BuilderSource]:
        """Each user builder of ``[model]`` by family name: its source file and that file's hash,
        as they were when the spec was loaded."""
        from tradeoff_search.spec._builder_source import resolve

        sources = {}
        for name, target in self.model.builders:
            try:
                sources[name] = resolve(name, target, self.path.parent)
            except ValueError as error:
                raise SpecError(self.path, self.builder_key(name), target, str(error)) from None
        return sources

    def builder_key(self, name: str) -> str:
        """The spec key naming the builder of family ``name``: ``model.builder`` or ``model.builders.NAME``."""
        builder = self.model.builder
        return (
            "model.builder" if builder is not None and builder.rpartition(":")[2] == name else f"model.builders.{name}"
        )

    @property
    def data_path(self) -> Path:
        """A ``csv:``/``npz:`` source's file or an ``images:`` folder, relative paths taken from the
        spec file's folder."""
        return self.data.located(self.path)

    @property
    def metric_names(self) -> list[str]:
        return [self.objectives.accuracy, LATENCY_METRIC, *self.objectives.extra.choices]

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * (len(self.metric_names) - 1)

    @property
    def hypervolume_reference(self) -> list[float] | None:
        """Where hypervolume is measured from: the spec's point; else accuracy 0, the latency
        budget or 100 ms, and for each extra objective its budget (``ram_bytes``: ``ram_kb``,
        ``model_bytes``: ``flash_kb``, in bytes); none when an extra has no budget."""
        if self.tracking.hypervolume_reference is not None:
            return list(self.tracking.hypervolume_reference)
        budgets = {RAM_BYTES: self.budget.ram_kb, MODEL_BYTES: self.budget.flash_kb}
        extras = [budgets.get(name) for name in self.objectives.extra.choices]
        if any(limit is None for limit in extras):
            return None
        return [0.0, self.latency.budget_ms or DEFAULT_REFERENCE_LATENCY_MS, *(limit * KB for limit in extras if limit)]

    def override(
        self, *, n_trials: int | None = None, timeout: float | None = None, worker_growth_mb: float | None = None
    ) -> StudySpec:
        """A copy with ``[study]`` settings replaced (as the CLI flags do), each checked by its key's rule."""
        flags = {"n_trials": n_trials, "timeout": timeout, "worker_growth_mb": worker_growth_mb}
        changes = {
            key: spec_rule(StudySection, key).parse(value, Path(f"--{key.replace('_', '-')}"), key)
            for key, value in flags.items()
            if value is not None
        }
        return dataclasses.replace(self, study=dataclasses.replace(self.study, **changes))

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec (defaults filled in) as plain data, for logging."""
        plain = {name: _plain(dataclasses.asdict(getattr(self, name))) for name in _SECTIONS}
        plain["latency"].pop("budget_ms", None)  # it is [budget] latency_ms
        # [model.builders] holds the builder = "..." shorthand too (as families does its name).
        plain["model"] = {k: v for k, v in plain["model"].items() if k != "builder"} | {
            "builders": dict(self.model.builders)
        }
        return plain


def _with_builder(model: ModelSection, table: Any, source: Path) -> ModelSection:
    """``builder = "file.py:build"`` as ``[model.builders] build = "file.py:build"``, and as the
    only family unless ``families`` lists it beside others."""
    if model.builder is None:
        return model
    name = model.builder.rpartition(":")[2]
    if not name.isidentifier():
        raise SpecError(source, "model.builder", model.builder, "module:function or path/to/file.py:function")
    if name in FAMILIES or name in dict(model.builders):
        raise SpecError(source, "model.builder", model.builder,
                        f"a function not named like a family already in the spec ({name}); "
                        "name it in [model.builders] instead")  # fmt: skip
    families = model.families if "families" in table else Categorical((name,))
    return dataclasses.replace(model, families=families, builders=((name, model.builder), *model.builders))


def _one_latency_budget(
    latency: LatencySection, budget: BudgetSection, source: Path
) -> tuple[LatencySection, BudgetSection]:
    """``latency.budget_ms`` and ``budget.latency_ms`` are one budget: given once, it is in both."""
    if latency.budget_ms is not None and budget.latency_ms is not None:
        expected = f"no value beside budget.latency_ms = {budget.latency_ms} (the same budget: give it once)"
        raise SpecError(source, "latency.budget_ms", latency.budget_ms, expected)
    value = latency.budget_ms if latency.budget_ms is not None else budget.latency_ms
    return dataclasses.replace(latency, budget_ms=value), dataclasses.replace(budget, latency_ms=value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"choices"}:
            return _plain(value["choices"])
        if set(value) == {"low", "high", "log"}:
            return [value["low"], value["high"]]
        return {k: _plain(v) for k, v in value.items() if v is not None}  # TOML has no null
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value
