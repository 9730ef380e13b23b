"""The docs stay true: the README is a front door of one page linking every docs page, every
relative link resolves, the cheap code blocks run and show their real output, every command shown
parses with the real command line, and the spec-key tables say the real defaults.

A ```python block runs unless the line above it says ``<!-- docs-test: skip (why) -->`` (it trains
models, or another test runs it); one with ``>>>`` prompts is a doctest, its output compared."""

from __future__ import annotations

import collections
import dataclasses
import doctest
import inspect
import io
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import optuna
import pytest

from tradeoff_search import StudySpec
from tradeoff_search.cli import main

from .conftest import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS, REPO / "CHANGELOG.md", REPO / "benchmarks" / "README.md"]
SKIP = re.compile(r"<!-- docs-test: skip \((.+)\) -->")
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)\n\1```$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CLI = re.compile(r"(?:python -m tradeoff_search|^tradeoff-search)(?=\s|$)(.*)")
# History belongs in CHANGELOG.md: how the code behaved before an issue changed it.
HISTORY = re.compile(r"\b(?:until|before|since) issue\b|\bbefore #\d+|\bat a checkout of\b", re.I)


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    text: str
    skip: str | None  # why it does not run here

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        above = text[: match.start()].rstrip("\n").rpartition("\n")[2]
        skip = SKIP.fullmatch(above.strip())
        code = "\n".join(row.removeprefix(match[1]) for row in match[3].splitlines())
        found.append(Block(page, line, match[2], code, skip[1] if skip else None))
    return found


def all_blocks(lang: str) -> list[Block]:
    return [block for page in PAGES for block in blocks(page) if block.lang == lang]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))  # a "# comment" in a code block is no heading
    found: set[str] = set()
    count: collections.Counter[str] = collections.Counter()
    for heading in re.findall(r"(?m)^#{1,6} (.+)$", text):
        base = slug(heading)
        found.add(f"{base}-{count[base]}" if count[base] else base)  # GitHub numbers repeated headings
        count[base] += 1
    return found


def help_of(argv: list[str]) -> str:
    """What ``python -m tradeoff_search ARGV --help`` prints; fails unless it exits 0."""
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0, f"tradeoff_search {' '.join(argv)}: exit {exited.value.code}"
    return out.getvalue()


def subcommands(argv: list[str]) -> list[str]:
    """The commands a (sub)parser offers, from its help's ``COMMAND`` list."""
    listed = help_of(argv).partition("\n  COMMAND\n")[2].partition("\n\n")[0]
    return re.findall(r"(?m)^    (\S+)", listed)


def leaf_commands(argv: list[str] | None = None) -> Iterator[list[str]]:
    for command in subcommands(argv or []):
        path = [*(argv or []), command]
        yield from leaf_commands(path) if subcommands(path) else [path]


@pytest.fixture(autouse=True)
def _stable_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps help to the terminal's width
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # `run --workers 2` is valid on a 1-core machine too
    monkeypatch.chdir(REPO)  # the code blocks' paths are the repository's


def test_the_readme_is_one_page_linking_every_docs_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move reference to docs/, figures to benchmarks/"
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in LINK.findall(README.read_text(encoding="utf-8"))
    }
    assert [page.name for page in DOCS if page.resolve() not in linked] == []
    assert [
        page.name for page in PAGES if page.name != "CHANGELOG.md" and HISTORY.search(page.read_text(encoding="utf-8"))
    ] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("block", [b for b in all_blocks("python") if b.skip is None], ids=str)
def test_python_blocks_run(block: Block) -> None:
    namespace: dict[str, Any] = {}
    if ">>> " in block.text:
        test = doctest.DocTestParser().get_doctest(block.text, namespace, str(block), str(block.page), block.line)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        report = io.StringIO()
        runner.run(test, out=report.write)
        assert runner.failures == 0, report.getvalue()
        return
    exec(compile(block.text, str(block), "exec"), namespace)  # our own docs' code, as a reader runs it
    build = namespace.get("build")
    if build is not None and list(inspect.signature(build).parameters) == ["trial", "input_shape", "n_classes"]:
        # A builder shown as the contract's example keeps the contract: a real trial, the model's output.
        model = build(optuna.create_study().ask(), (8, 8), 10)
        assert model.output_shape == (None, 10)


def test_skipped_python_blocks_say_why_and_compile() -> None:
    skipped = [block for block in all_blocks("python") if block.skip is not None]
    for block in skipped:
        assert len(block.skip or "") > 10, f"{block}: say why it does not run here"
        compile(block.text, str(block), "exec")  # still valid Python


def test_toml_blocks_are_specs() -> None:
    for block in all_blocks("toml"):
        document = tomllib.loads(block.text)  # every block is TOML
        if {"study", "data"} <= document.keys():  # a whole spec: valid, as the spec's own folder reads it
            StudySpec.from_dict(document, path=REPO / "studies" / "docs.toml")


def test_shown_help_is_the_real_help() -> None:
    shown = {}
    for block in all_blocks("text"):
        usage = re.match(r"usage: tradeoff_search ((?:[a-z]+ )+)\[", block.text)
        if usage:
            argv = usage[1].split()
            assert block.text == help_of(argv).rstrip("\n"), f"{block}: update it from tradeoff_search {usage[1]}--help"
            shown[" ".join(argv)] = block
    assert sorted(shown) == sorted(" ".join(argv) for argv in leaf_commands())  # docs/cli.md: every command


def command_lines() -> Iterator[tuple[Path, str]]:
    """Every ``python -m tradeoff_search …`` shown: in code blocks and in inline code."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        code = [b.text.replace("\\\n", " ") for b in blocks(page) if b.lang in ("bash", "text", "")]
        spans = re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
        for piece in re.split(r"\n|&&|;|\|", "\n".join([*code, *spans])):
            found = CLI.search(piece.strip().removeprefix("$ "))
            if found:
                yield page, found[1].strip().rstrip(")")


def test_commands_shown_parse_with_the_real_command_line() -> None:
    commands = list(command_lines())
    assert len(commands) > 20
    readme = {line.split()[0] for page, line in commands if page == README and line}
    assert readme >= {argv[0] for argv in leaf_commands()}  # the README shows every command
    wrong = []
    for page, line in commands:
        # Placeholders (SPEC, COMMAND, …) left out: what stays must parse.
        words = [w for w in shlex.split(line, comments=True) if w not in ("…", "...") and not w.isupper()]
        try:
            known = set(re.findall(r"--[a-z][a-z0-9-]*", help_of(words)))  # parsed, up to its --help
        except AssertionError as error:
            wrong.append(f"{page.name}: {line}: {error}")
            continue
        unknown = {w.partition("=")[0] for w in words if w.startswith("--")} - known
        if unknown:
            wrong.append(f"{page.name}: {line}: {sorted(unknown)} not in its --help")
    assert wrong == []


def test_spec_tables_are_the_real_defaults() -> None:
    base = StudySpec.from_dict({"data": {"source": "sklearn:iris"}})
    text = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    sections = [f.name for f in dataclasses.fields(StudySpec) if f.name not in ("path", "digest")]
    tables = dict(re.findall(r"(?ms)^## `\[(\w+)\]`\n(.*?)(?=^## )", text))
    assert sorted(tables) == sorted(sections)
    for section, table in tables.items():
        rows = re.findall(r"(?m)^\| `(\w+)` \| ([^|]+) \|", table)
        fields = {f.name: f for f in dataclasses.fields(getattr(base, section))}
        assert sorted(key for key, _ in rows) == sorted(fields), f"[{section}]: the table's keys are the spec's"
        for key, default in rows:
            literal = re.fullmatch(r"`(.+)`", default.strip())
            if literal is None:  # said in words: none, required, or derived from another key
                assert fields[key].default in (None, "", (), dataclasses.MISSING), f"{section}.{key}"
                continue
            value = tomllib.loads(f"v = {literal[1]}")["v"]
            document: dict[str, dict[str, Any]] = {"data": {"source": "sklearn:iris"}}
            document.setdefault(section, {})[key] = value
            documented = getattr(getattr(StudySpec.from_dict(document), section), key)
            assert documented == getattr(getattr(base, section), key), f"{section}.{key} = {literal[1]}"
