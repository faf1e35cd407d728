"""Generated references are current: the op table and the target fields are documented once."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("module", "path"), [
    ("ortnpu.domain.docgen", "docs/op-domain.md"), ("ortnpu.target.docgen", "docs/targets.md")])
def test_generated_docs_are_current(module: str, path: str) -> None:
    import importlib

    doc = ROOT / path
    if not doc.exists():
        pytest.skip("docs are not part of this installation")
    rendered = importlib.import_module(module).render()
    assert doc.read_text(encoding="utf-8") == rendered, (
        f"{path} is stale: run `python -m {module} > {path}`")


def test_cli_reference_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/cli.md is the parsers' help: a new option lands in the reference with its command."""
    from ortnpu.cli import docgen

    doc = ROOT / "docs/cli.md"
    if not doc.exists():
        pytest.skip("docs are not part of this installation")
    monkeypatch.setenv("COLUMNS", "100")   # what `python -m ortnpu.cli.docgen` renders with
    assert doc.read_text(encoding="utf-8") == docgen.render(), (
        "docs/cli.md is stale: run `python -m ortnpu.cli.docgen > docs/cli.md`")
