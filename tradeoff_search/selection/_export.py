"""The folder ``select`` exports to, written only when it is empty or holds what an earlier
``select`` wrote there (listed in its ``selection.json``): no file of another model, or of
anyone else, is left beside the new one or overwritten."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tradeoff_search.record._keys import PREPROCESSING_FILE
from tradeoff_search.rules import excerpt
from tradeoff_search.spec._validation import ParameterError
from tradeoff_search.tracking._trial_runs import RUN_FILES
from tradeoff_search.trial._staging import file_digest

FILES = (*RUN_FILES, PREPROCESSING_FILE)  # what select may write, besides its manifest
MANIFEST = "selection.json"  # what select wrote to the folder, with the sha256 of each file
FORMAT = "tradeoff_search.selection/1"


def written_before(out: Path) -> list[str]:
    """The files an earlier ``select`` wrote to ``out`` (none when it is absent or empty).

    Raises:
        ParameterError: ``out`` is no folder, or holds anything its manifest does not list.
    """
    blocking = next((folder for folder in (out, *out.parents) if folder.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ParameterError("select_model", "out", str(out), f"a folder ({blocking} is a file)")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return []
    try:  # only names select writes: a manifest is no list of files to remove anywhere
        written = [name for name in json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"] if name in FILES]
    except (OSError, ValueError, KeyError, TypeError):
        written = []
    foreign = [name for name in present if name not in {*written, MANIFEST}]
    if foreign or MANIFEST not in present:
        listed = foreign or present
        shown = ", ".join(excerpt(name) for name in listed[:3]) + (", …" if len(listed) > 3 else "")
        expected = f"an empty folder or one select wrote (it holds {shown}, which select did not write)"
        raise ParameterError("select_model", "out", str(out), expected)
    return written


def export(out: Path, files: Mapping[str, Path], previous: Sequence[str], about: Mapping[str, Any]) -> None:
    """Copy ``files`` (name: path, names of :data:`FILES`) to ``out``, removing what an earlier
    select wrote there that they do not replace; ``out/selection.json`` lists them with their
    sha256 and ``about`` (the study, the trial). The manifest is written first with the old and
    new files, so that an export cut short leaves a folder the next one may still replace."""
    out.mkdir(parents=True, exist_ok=True)
    digests = {name: file_digest(path) for name, path in files.items()}
    _write_manifest(out, about, {**dict.fromkeys(previous, ""), **digests})
    for name in previous:
        if name not in files:
            (out / name).unlink(missing_ok=True)
    for name, path in files.items():
        (out / name).unlink(missing_ok=True)  # a link put in its place is replaced, not written through
        shutil.copyfile(path, out / name)
    _write_manifest(out, about, digests)


def _write_manifest(out: Path, about: Mapping[str, Any], digests: Mapping[str, str]) -> None:
    document = {"format": FORMAT, **about, "files": dict(digests)}
    (out / MANIFEST).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
