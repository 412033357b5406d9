"""The layering rules in pyproject.toml ([tool.importlinter]) hold: serving, the API and the
scheduler never import training; features and models never import the store or the API; alert
rules are pure."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold(monkeypatch, capsys):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "broken" in out and "0 broken" in out, out
