"""Write ``vendor/vega/dvc_plots.html``: DVC's plots page with Vega, Vega-Lite and Vega-Embed inline.

``dvc plots show`` / ``dvc plots diff`` load these three libraries from a CDN by default, so on an air-gapped
machine only the image plots appear. ``.dvc/config`` points ``plots.html_template`` at the page written here,
which carries the libraries itself (and leaves out DVC's ``{scripts}`` placeholder, the CDN tags).

The versions are the ones dvc-render 1.0.x loads from the CDN (``dvc_render/vega.py``), so the plots render as
DVC's own page would. Rebuild after a dvc-render upgrade that changes them::

    npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2   # run in an empty folder
    python scripts/vega_template.py FOLDER

Why vendored rather than a Python package: no PyPI package ships these UMD builds except ``panel`` (bokeh and a
dozen more dependencies for 0.8 MB of JavaScript) and ``altair_viewer`` (Vega-Lite 4, older than the v5 specs DVC
writes). The licences (BSD-3-Clause) are copied beside the page.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

LIBRARIES = {  # npm tarball name -> minified UMD build inside it
    "vega-5.20.2.tgz": "package/build/vega.min.js",
    "vega-lite-5.2.0.tgz": "package/build/vega-lite.min.js",
    "vega-embed-6.18.2.tgz": "package/build/vega-embed.min.js",
}
OUT = Path(__file__).resolve().parent.parent / "vendor" / "vega"
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {names}: inline (BSD-3-Clause, see vendor/vega/LICENSE-*), so the page renders without a network -->
{scripts}
    <script>
        // A plot whose data file is absent reaches vegaEmbed as an empty spec ({{}}): the stage wrote no rows (it
        // says why in its notes and report). Say so in place of an empty chart.
        const embedPlot = vegaEmbed;
        window.vegaEmbed = function (target, spec, options) {{
            if (spec && Object.keys(spec).length) {{
                return embedPlot(target, spec, options);
            }}
            const note = document.createElement("p");
            note.className = "dvc-no-data";
            note.textContent = target.slice(1) + ": no data. The stage wrote no rows for this plot; its notes "
                + "and report say why.";
            document.querySelector(target).appendChild(note);
            return Promise.resolve(null);
        }};
    </script>
    <style>
        .dvc-no-data {{
            color: #777;
            font-style: italic;
        }}
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main(folder: Path) -> None:
    """Read the three npm tarballs in ``folder``; write the page and the licences into ``vendor/vega``."""
    scripts = []
    OUT.mkdir(parents=True, exist_ok=True)
    for tarball, member in LIBRARIES.items():
        with tarfile.open(folder / tarball) as archive:
            code = archive.extractfile(member).read().decode("utf-8")
            licence = archive.extractfile("package/LICENSE").read()
        if "</script" in code or "{plot_divs}" in code or "{refresh_tag}" in code:
            raise SystemExit(f"{tarball}: {member} cannot be inlined as it is (holds a closing tag or placeholder)")
        name = tarball.removesuffix(".tgz")
        (OUT / f"LICENSE-{name.rsplit('-', 1)[0]}").write_bytes(licence)
        scripts.append(f"    <script>/* {name} */\n{code}\n    </script>")
    names = ", ".join(t.removesuffix(".tgz") for t in LIBRARIES)
    (OUT / "dvc_plots.html").write_text(PAGE.format(names=names, scripts="\n".join(scripts)), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
