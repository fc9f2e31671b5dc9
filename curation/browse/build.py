"""Build one FiftyOne dataset per dataset version from the pipeline's outputs, in batches.

Each unique image of the manifest becomes a sample carrying every stage's output:

| field | from | content |
|---|---|---|
| ``filepath``, ``metadata`` | manifest | image path (absolute), width/height/size/MIME without re-reading the image |
| manifest columns, ``meta_*`` | manifest | ``image_id``, ``sha256``, ``dup_group``, ``dup_group_size``, metadata CSV |
| ``prelabel`` | predictions | ``Classification`` with ``confidence`` and ``logits`` (log of the ``p_<class>``
  columns, in ``dataset.info["logit_classes"]`` order) and attributes margin, entropy, source, model_name,
  model_version |
| ``caption``, ``description_en``, ``description_ko``, ``caption_score``, ``caption_flag`` | predictions | text |
| ``embedding`` | embeddings | the pre-labeler's image embedding |
| ``annotations`` | annotations | ``Classifications``, one per annotator (attribute ``annotator``, ``severity`` ...) |
| ``annotation_boxes`` | annotations | ``Detections`` from the annotators' boxes, if any |
| ``annotation_polygons`` | annotations | ``Polylines`` (closed, filled) from the annotators' polygons, if any |
| ``ground_truth``, ``agreement``, ``n_annotators``, ``disputed``, ``severity``, ``consensus_method``,
  ``description_reviewed`` | consensus |
| tags, ``split`` | splits | the split name, as a tag and a field |
| ``ground_truth_boxes``, ``ground_truth_polygons`` | splits, augmented | the exported regions: ``Detections`` and,
  for regions with a shape (mask or polygon labels), ``Polylines`` (closed, filled), moved with each variant |
| ``dup_cross_split`` | manifest + splits | the near-duplicate group spans more than one split (a leak) |
| ``is_augmented``, ``source_image_id``, ``n_augmented`` | augmented | variants are samples tagged ``augmented``
  pointing at their source |
| ``augmentation`` | augmented | on variants only: one embedded document with the augment record's other columns
  (seed, recipe hash, applied transforms, ...); originals leave it empty instead of carrying a dozen empty fields |
| ``mistakenness``, ``uniqueness``, ``eval_prelabel`` | computed | see :func:`build_dataset` |
| ``anomaly``, ``anomaly_score``, ``anomaly_regions`` ... | predictions | heatmap, score, regions: see
  :mod:`curation.browse.anomaly` |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.browse import brain, samples
from curation.browse.inputs import INPUT_NAMES, BrowseInputs
from schemas.params_browse import BrowseParams

# the App's sidebar opens with what a reviewer judges, before the ~40 metadata fields
REVIEW_FIELDS = (
    "ground_truth",
    "ground_truth_boxes",
    "ground_truth_polygons",
    "prelabel",
    "agreement",
    "disputed",
    "severity",
    "description_reviewed",
    "mistakenness",
    "annotations",
    "annotation_boxes",
    "annotation_polygons",
    "split",
    "description_en",
    "description_ko",
    "caption",
)

Progress = Callable[[int], None]


@dataclass
class BuildSummary:
    """What was built: written as ``fiftyone.json`` (DVC metrics) by the CLI."""

    dataset: str
    version: str
    n_samples: int = 0
    n_images: int = 0
    n_augmented: int = 0
    inputs_used: list[str] = field(default_factory=list)
    inputs_skipped: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    views: dict[str, int] = field(default_factory=dict)
    brain_runs: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    text_model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version,
            "n_samples": self.n_samples,
            "n_images": self.n_images,
            "n_augmented": self.n_augmented,
            "inputs_used": self.inputs_used,
            "inputs_skipped": self.inputs_skipped,
            "issues": self.issues,
            "views": self.views,
            "brain_runs": self.brain_runs,
            "evaluation": self.evaluation,
            "text_model": self.text_model,
        }


def build_dataset(
    inputs: BrowseInputs,
    *,
    name: str,
    version: str,
    class_names: Sequence[str],
    settings: BrowseParams,
    base_dir: Path,
    on_start: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
    cache_dir: Path | None = None,
) -> BuildSummary:
    """Build (or rebuild) the persistent FiftyOne dataset ``name`` from ``inputs``.

    After the samples are added in batches of ``settings.batch_size``: a similarity index over the embeddings
    (fiftyone-brain, sklearn backend, cosine), uniqueness, mistakenness of the consensus labels given the
    pre-labels, ``evaluate_classifications`` of the pre-labels against the consensus (key ``eval_prelabel``), and
    the saved views of :mod:`curation.browse.views`. Brain runs and the evaluation cover the original images, not
    augmented variants. FiftyOne must already point at a database (:func:`curation.browse.database.use`).

    Args:
        inputs: The pipeline outputs; see :func:`curation.browse.inputs.read_inputs`.
        name: Dataset name; an existing dataset of that name is replaced.
        version: Recorded in ``dataset.info["version"]``.
        class_names: Ontology classes, in order: the order of the pre-label logits and the evaluation classes.
        settings: The ``browse`` params.
        base_dir: Folder that relative image paths are resolved against (the project root).
        on_start: Called once with the number of samples to add.
        on_progress: Called with the number of samples added since the last call.
        cache_dir: The prelabel cache, for the region-crop embeddings of the anomaly similarity index (speed only).
    """
    import fiftyone as fo

    from curation.browse import views as browse_views
    from curation.browse.anomaly import add_anomaly_fields

    summary = BuildSummary(dataset=name, version=version)
    summary.inputs_used = [n for n in INPUT_NAMES if getattr(inputs, n) is not None]
    summary.inputs_skipped = [n for n in INPUT_NAMES if getattr(inputs, n) is None]
    table = samples.image_table(inputs, summary)
    logit_classes = samples.logit_classes(inputs.predictions, class_names, summary)
    augmented = samples.augmented_table(inputs, table, summary)

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    dataset.info = {
        "version": version,
        "logit_classes": logit_classes,
        "classes": list(class_names),
        "inputs": dict(inputs.sources),
    }
    dataset.default_classes = list(class_names)
    dataset.save()

    total = len(table) + (0 if augmented is None else len(augmented))
    if on_start:
        on_start(total)
    base_dir = Path(base_dir).resolve()
    for batch in samples.batches(table, settings.batch_size):
        dataset.add_samples([samples.image_sample(row, base_dir, logit_classes) for row in batch], progress=False)
        if on_progress:
            on_progress(len(batch))
    if augmented is not None:
        for batch in samples.batches(augmented, settings.batch_size):
            dataset.add_samples([samples.augmented_sample(row, base_dir) for row in batch], progress=False)
            if on_progress:
                on_progress(len(batch))
        missing_metadata = dataset.exists("metadata", False)
        if len(missing_metadata):
            missing_metadata.compute_metadata(progress=False)

    originals = browse_views.originals(dataset)
    summary.n_images = len(table)
    summary.n_augmented = 0 if augmented is None else len(augmented)
    summary.n_samples = len(dataset)
    summary.brain_runs = brain.brain_runs(dataset, originals, settings, summary)
    summary.brain_runs += add_anomaly_fields(
        dataset,
        originals,
        inputs,
        summary,
        base_dir=base_dir,
        max_crops=settings.region_index_max_crops,
        cache_dir=cache_dir,
    )
    summary.evaluation = brain.evaluate(originals, logit_classes or list(class_names), summary)
    if samples.PRELABEL_FIELD in dataset.get_field_schema() and samples.GT_FIELD in dataset.get_field_schema():
        brain.add_mistakenness(originals)
    summary.views = browse_views.save_views(dataset, settings=settings)
    dataset.app_config.sidebar_groups = sidebar_groups(dataset)
    dataset.save()
    return summary


def sidebar_groups(dataset: Any) -> list[Any]:
    """The App's sidebar: a ``review`` group of the :data:`REVIEW_FIELDS` present first (after the tags, which the
    App keeps on top), the anomaly fields (:mod:`curation.browse.anomaly`), then FiftyOne's default groups without
    them; the augmentation fields in their own collapsed group at the end."""
    import fiftyone as fo

    from curation.browse.anomaly import SIDEBAR_FIELDS

    schema = dataset.get_field_schema()
    review = [f for f in REVIEW_FIELDS if f in schema]
    anomaly = [f for f in SIDEBAR_FIELDS if f in schema]
    augmentation = [f for f in ("source_image_id", "n_augmented", samples.AUGMENTATION_FIELD) if f in schema]
    moved = set(review) | set(anomaly) | set(augmentation)
    groups = [fo.SidebarGroupDocument(name="review", paths=review, expanded=True)] if review else []
    if anomaly:
        groups.append(fo.SidebarGroupDocument(name="anomaly", paths=anomaly, expanded=True))
    for group in fo.DatasetAppConfig.default_sidebar_groups(dataset):
        group.paths = [p for p in group.paths if p not in moved and p.split(".")[0] not in moved]
        groups.append(group)
    if augmentation:
        groups.append(fo.SidebarGroupDocument(name="augmentation", paths=augmentation, expanded=False))
    return groups
