"""Few-shot with and without the anomaly features (prelabel.anomaly.fewshot_features) on magnetic tile, through the
prelabel stage's own pieces: embeddings and patch features via the stage's cache, the AnomalyScorer with no labels
(reference none), few-shot's joined_features/make_classifier. Balanced accuracy with n labelled images per class
(20 seeded draws), tested on all other images; defect-vs-OK and the six classes.

    python scripts/bench_anomaly_fewshot.py [CACHE_DIR]   # about 45 min on 2 busy cores (mutual scoring: 1344 images)

Measured (2026-12-01, all 1344 images, Lite0, default FeatureSpec): no-label image AUROC 0.785; day-one calls 1296 OK
/ 48 defect (recall 0.10, false alarms 0.8%); defect vs OK 5/10/20 per class 0.585/0.626/0.687 -> 0.705/0.725/0.778;
six classes 0.494/0.613/0.721 -> 0.575/0.704/0.799.
"""

import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from curation.prelabel.anomaly_scorer import AnomalyScorer, choose_reference, load_patch_model
from curation.prelabel.base import ScoreInput
from curation.prelabel.cache import PrelabelCache
from curation.prelabel.compute import Progress, RunContext, embed_images, patch_features
from curation.prelabel.engines import Engine
from curation.prelabel.fewshot import joined_features, make_classifier
from curation.prelabel.images import ImageRef
from curation.prelabel.models import OfflineBackbone, Runtime
from schemas.params import load_params

root = Path("/work/shared/datasets/magnetic-tile")
files = sorted(root.glob("MT_*/Imgs/*.jpg"))
cls = [f.parts[-3][3:] for f in files]
refs = [ImageRef(str(f), hashlib.sha256(f.read_bytes()).hexdigest(), 1, i) for i, f in enumerate(files)]
params = load_params("params.yaml")
s = params.prelabel.model_copy(update={"device": "cpu"})
t0 = time.time()
stats: Counter[str] = Counter()
with (
    PrelabelCache(Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/prelabel")) as cache,
    Engine("local", s.ray, decode_workers=2) as engine,
):
    ctx = RunContext(s, cache, engine, False, Progress(None, None), stats)
    emb = embed_images(OfflineBackbone(Runtime("cpu", "float32")), refs, ctx)
    model = load_patch_model(s.anomaly, "cpu")
    feats = patch_features(model, refs, ctx)
print("features", time.time() - t0, dict(stats), flush=True)
ids = [r.sha256[:16] for r in refs]
names = params.ontology.class_names
scorer = AnomalyScorer(s, choose_reference(s.anomaly, None, "ok"), labels=None, ok="ok", feature_key="x")
out = scorer.score(ScoreInput(emb, ids, names, "x", patch_features=feats))
print("scored", time.time() - t0, json.dumps(out.report), flush=True)
y_def = np.array([c != "Free" for c in cls])
scores = scorer.run.scores
print("image AUROC (no labels, all 1344):", round(roc_auc_score(y_def, scores), 4))
called = scorer.run.is_defect
print(
    "day-one calls: OK",
    int((~called).sum()),
    "defect",
    int(called.sum()),
    "| recall of defects",
    round(called[y_def].mean(), 3),
    "false alarms on Free",
    round(called[~y_def].mean(), 3),
)
x_plain = emb
x_join, pre = joined_features(emb, out.features, s.fewshot.normalize)


def bacc(x, y, n, prescaled):
    res = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        train = np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=False) for c in np.unique(y)])
        test = np.setdiff1d(np.arange(len(y)), train)
        m = make_classifier(s.fewshot, prescaled=prescaled).fit(x[train], y[train])
        res.append(balanced_accuracy_score(y[test], m.predict(x[test])))
    return float(np.mean(res)), float(np.std(res))


report = {}
for task, y in (("defect_vs_ok", y_def.astype(int)), ("six_classes", np.array(cls))):
    for n in (5, 10, 20):
        a = bacc(x_plain, y, n, False)
        b = bacc(x_join, y, n, pre)
        report[f"{task}@{n}"] = {"embedding": a, "with_anomaly": b}
        print(f"{task} {n}/class: embedding {a[0]:.3f}+-{a[1]:.3f}  with anomaly {b[0]:.3f}+-{b[1]:.3f}", flush=True)
print(json.dumps(report))
print("seconds", time.time() - t0)
