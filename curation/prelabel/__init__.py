"""Pre-labeling: CLIP zero-shot scores with prompt ensembles, BLIP captions with Korean descriptions, and few-shot
refinement on image embeddings once human labels exist.

The core is :func:`curation.prelabel.stage.prelabel` (manifest + settings + ontology in, frames out);
:func:`curation.prelabel.stage.write_prelabel` writes them; :mod:`curation.prelabel.cli` is the typer command.
The roles a model or scorer plays (embedder, text-image embedder, describer, scorer) are the Protocols of
:mod:`curation.prelabel.base`; the stage runs caching, batching and progress once around them
(:mod:`curation.prelabel.compute`) and writes the outputs with :mod:`curation.prelabel.outputs`.
Nothing heavy (torch, transformers) is imported here: the CLI imports this package at start-up.
"""
