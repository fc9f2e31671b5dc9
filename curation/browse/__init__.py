"""FiftyOne dataset browser: every pipeline stage's output on one sample per image, with saved views, a similarity
index, text search and likely label errors.

Modules: ``database`` (the project's own mongod, started and stopped by PID), ``build`` (inputs -> dataset, in
batches; ``inputs`` reads and checks them, ``samples`` makes the samples, ``brain`` runs the brain and the
evaluation), ``views`` (saved views), ``search`` (text -> image search through a CLIP text encoder), ``cli``
(``curation fiftyone``, ``curation browse``, ``curation search``). FiftyOne is imported inside functions only: it
takes seconds to import.
"""
