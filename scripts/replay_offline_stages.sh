#!/usr/bin/env bash
# Re-run the pipeline's offline stages (agreement -> refine -> split -> augment -> export -> fiftyone -> health) on
# the data/ folder of an earlier run, with the code in CODE_DIR: the same annotations in, so two versions of the code
# can be compared byte for byte (scripts/compare_outputs.py) without Label Studio's run-to-run differences (the
# simulated reviews of `make demo` differ between runs: which tasks each reviewer gets, ids, timestamps).
#
# Usage: scripts/replay_offline_stages.sh CODE_DIR WORK_DIR
#   CODE_DIR: a checkout of the code to run (PYTHONPATH); WORK_DIR: a project folder (params.yaml, dvc.yaml) whose
#   data/ holds sample/, ingest/, prelabel/ and pull/ of the run to replay. Outputs replace data/<stage>/ there.
set -euo pipefail
code=$(cd "$1" && pwd)
cd "$2"
# PYTHONSAFEPATH: the work folder may be a checkout too; its curation/ must not shadow CODE_DIR's
export PYTHONPATH="$code" PYTHONSAFEPATH=1 NO_ALBUMENTATIONS_UPDATE=1 FIFTYONE_DO_NOT_TRACK=true
used=$(python -c 'import curation; print(curation.__file__)')
[[ "$used" == "$code/"* ]] || { echo "error: python imports curation from $used, not from $code" >&2; exit 1; }
echo "code: $used"
run() { echo "+ curation $*"; python -m curation.cli "$@"; }
run agreement data/pull/annotations.parquet data/agreement --predictions data/prelabel/predictions.parquet
run prelabel data/ingest/manifest.parquet data/refine --labels data/agreement/consensus.parquet
run split data/ingest/manifest.parquet data/split --consensus data/agreement/consensus.parquet \
  --prior-labels data/ingest/prior_labels.parquet
run augment data/split/splits.parquet data/ingest/manifest.parquet data/augment
run export data/split/splits.parquet data/ingest/manifest.parquet data/export --augmented data/augment \
  --predictions data/refine/predictions.parquet
run fiftyone data/fiftyone --manifest data/ingest/manifest.parquet --predictions data/refine/predictions.parquet \
  --embeddings data/prelabel/embeddings.parquet --annotations data/pull/annotations.parquet \
  --consensus data/agreement/consensus.parquet --splits data/split/splits.parquet \
  --augmented data/augment/augmented.parquet
run health data/ingest/manifest.parquet data/health --quarantine data/ingest/quarantine.csv \
  --prior-labels data/ingest/prior_labels.parquet --splits data/split/splits.parquet \
  --consensus data/agreement/consensus.parquet --predictions data/refine/predictions.parquet \
  --agreement data/agreement/agreement.json --export data/export/export.json
