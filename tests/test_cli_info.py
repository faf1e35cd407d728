"""``ortnpu info`` says which registration of the ``com.ortnpu`` domain is in use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ortnpu
from ortnpu.cli import main
from ortnpu.domain.registry import uses_native


def test_info_names_the_domain_registration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines()
                if x.startswith("com.ortnpu ops:"))
    assert ("own C custom ops" in line) == uses_native()


def test_info_reports_the_python_fallback(tmp_path: Path) -> None:
    """With ``ORTNPU_DOMAIN_OPS=python`` the fallback is in use and info says so (a subprocess
    importing the same ortnpu as this one)."""
    env = {**os.environ, "ORTNPU_DOMAIN_OPS": "python"}
    code = ("import ortnpu, sys; from ortnpu.cli import main; "
            f"assert ortnpu.__file__ == {ortnpu.__file__!r}, ortnpu.__file__; "
            "sys.exit(main(['info']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "com.ortnpu ops: onnxruntime-extensions Python ops" in out.stdout
