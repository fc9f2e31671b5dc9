"""The ``curation`` command line: one typer app over the stage functions.

Each command loads params, resolves paths, calls a stage's core function and writes its outputs. A
:class:`CurationError` becomes a one-line message and exit code 1; a traceback means a bug.
"""

from __future__ import annotations

import typer

from curation.agreement.cli import agreement_command
from curation.augment_cli import augment_command
from curation.browse.cli import browse_command, database_command, fiftyone_command, search_command
from curation.export_cli import export_command
from curation.health_cli import health_command
from curation.ingest_cli import ingest_command
from curation.ontology_cli import ontology_app
from curation.prelabel.cli import prelabel_command, refine_command
from curation.release_cli import release_command
from curation.sample_data_cli import sample_data_command
from curation.serve.cli import connect_backend_command, serve_command
from curation.split_cli import split_command
from curation.studio.cli import pull_command, push_command, simulate_command, studio_app
from curation.usage import readable_help

app = typer.Typer(
    name="curation",
    help="Turn a folder of raw defect images into a reviewed, versioned training dataset.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


# The stages in pipeline order (each command lives in its own module, beside its stage's core).
app.command("sample-data")(sample_data_command)
app.command("ingest")(ingest_command)
app.command("prelabel")(prelabel_command)
app.command("refine")(refine_command)  # the DVC stage's name for `prelabel --labels consensus`
app.add_typer(studio_app, name="studio")
# the params section is `labelstudio`: the same commands under that name
app.add_typer(studio_app, name="labelstudio", hidden=True)
app.command("push")(push_command)
app.command("simulate")(simulate_command)
app.command("pull")(pull_command)
app.command("agreement")(agreement_command)
app.command("split")(split_command)
app.command("augment")(augment_command)
app.command("export")(export_command)
app.command("fiftyone")(fiftyone_command)
app.command("browse")(browse_command)
app.command("search")(search_command)
app.command("fiftyone-db")(database_command)
app.command("release")(release_command)
app.command("serve")(serve_command)
studio_app.command("connect-backend")(connect_backend_command)
app.add_typer(ontology_app, name="ontology")
app.command("health")(health_command)
readable_help(app)

if __name__ == "__main__":
    app()
