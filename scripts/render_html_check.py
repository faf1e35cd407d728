#!/usr/bin/env python3
"""Check that an ortnpu HTML report renders in headless Chromium.

Usage: ``python scripts/render_html_check.py REPORT.html [--screenshot out.png]``

Loads the file with ``chromium --headless`` (Debian package ``chromium``), dumps the rendered
DOM and checks that the summary, the layer table and both SVG drawings are there; optionally
saves a screenshot. Exit code 0 when it renders, 1 when something is missing, 2 when Chromium
is not installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REQUIRED = ('id="summary"', 'id="layers"', 'aria-label="cycles per layer"',
            'aria-label="partition graph"', "</svg>")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(html: Path, screenshot: Path | None = None, timeout: float = 120) -> list[str]:
    """Render ``html`` headless; return the problems found (empty when it renders).

    Raises:
        FileNotFoundError: no Chromium binary.
    """
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("chromium not found; install it with apt-get install chromium")
    url = html.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={profile}", "--disable-dev-shm-usage"]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                             timeout=timeout, check=False)
        problems = [f"missing {r!r} in the rendered DOM" for r in REQUIRED
                    if r not in dom.stdout]
        if dom.returncode != 0:
            problems.append(f"chromium exited with {dom.returncode}: {dom.stderr[-500:]}")
        if screenshot is not None:
            shot = subprocess.run([*base, f"--screenshot={screenshot.resolve()}",
                                   "--window-size=1400,1800", url], capture_output=True,
                                  text=True, timeout=timeout, check=False)
            if shot.returncode != 0 or not screenshot.exists() or \
                    screenshot.stat().st_size < 10_000:
                problems.append("the screenshot is missing or blank")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    try:
        problems = render(args.html, args.screenshot)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    for p in problems:
        print(f"{args.html}: {p}", file=sys.stderr)
    if not problems:
        print(f"{args.html}: renders in headless Chromium")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
