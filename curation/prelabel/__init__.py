"""Pre-labeling: CLIP zero-shot scores with prompt ensembles, BLIP captions with Korean descriptions, and few-shot
refinement on image embeddings once human labels exist.

The core is :func:`curation.prelabel.stage.prelabel` (manifest + settings + ontology in, frames out);
:func:`curation.prelabel.stage.write_prelabel` writes them; :mod:`curation.prelabel.cli` is the typer command.
Nothing heavy (torch, transformers) is imported here: the CLI imports this package at start-up.
"""
