"""Debian's chromium for the UI tests (Label Studio, the FiftyOne App): where it is and how it is started.

No sandbox (containers run as root), no GPU, nothing that talks to the internet. Playwright adds ``--headless``
itself; a bare command line adds ``HEADLESS``.
"""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "Debian chromium missing: apt-get install -y chromium (make test installs it)"
HEADLESS = "--headless"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
