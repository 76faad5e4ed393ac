"""Frozen-feature probes: `freeze=logreg` (Kornblith, Shlens & Le 2019) and `freeze=knn` (DINO's
k-NN evaluation). No training loop: the backbone's pooled pre-logits of every split are
extracted once (features.py, cached on disk), a classifier is fitted on them, and the run writes
the usual result.json with one epoch record (`freeze_phase: "probe"`), so the report sets a probe
beside fine-tuning runs.

logreg: multinomial logistic regression, L-BFGS (scikit-learn), features standardized with the
train split's mean and std (`standardize`). C (scikit-learn's inverse L2 strength) is chosen on
the val split from `C_grid`: the highest val accuracy in the data set's metric (top-1, or mean
per-class accuracy where that is what is reported: DataSplits.metric), then the lowest val loss,
then the smallest C; test is never looked at. `l2_grid` searches L2 strengths instead (per image: C = 1 /
(strength x the fit's images), so the refit on train + val keeps the chosen strength; Logreg.C). Then, as Kornblith et al. (and VTAB's
train800val200) do, the chosen C is refitted on train + val (`refit_on: train_val`; `train` keeps
the model that was selected). val_* in the record are the selected train-only model's (the numbers
C was chosen by), test_* the final model's, train_* the final model's on the train split.

knn: L2-normalised features, cosine similarity, the k nearest training images vote with weight
exp(similarity / temperature) (DINO eval_knn.py: k=20, T=0.07). val is voted by the train split,
test by train + val (nothing is selected, so val is labelled data like any other, as logreg's
refit), train by train leaving each image out. Losses are the cross-entropy of the normalised
votes, each probability clamped at 1e-6 (a class that got no vote costs 13.8)."""

import copy
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tlbench.probes import features
from tlbench.errors import ConfigError
from tlbench.records import results
from tlbench.specs import PROBES, FeatureSpec, Knn, Logreg
from tlbench.training import engine

log = logging.getLogger("tlbench")
KNN_PROB_FLOOR = 1e-6
QUERY_CHUNK = 1024  # k-NN queries per similarity matrix: 1024 x 50,000 floats = 200 MB for CIFAR-10


def is_probe(freeze_name: str) -> bool:
    """freeze=knn / logreg: a fitted classifier on frozen features, no training loop."""
    return freeze_name in PROBES


@dataclass
class ProbeOutcome:
    record: dict       # the run's one epoch record (freeze_phase "probe")
    probe: dict        # result.json `probe`
    feature_dim: int


def run_probe(probe: Knn | Logreg, spec: FeatureSpec, splits, built, device: torch.device,
              dataset_identity: dict) -> ProbeOutcome:
    """Extracts (or reads) the features of every split and fits the probe on them.
    `dataset_identity`: the run identity's `dataset.*` keys, which name the data for the feature
    cache. A torchvision model's head is replaced by identity in place (features.feature_function)."""
    method = "logreg" if isinstance(probe, Logreg) else "knn"
    started = time.perf_counter()
    found, used = features.split_features(spec, splits, built, device, dataset_identity)
    train, val = found["train"], found["val"]
    test = found.get("test", val)  # val_split=0: val is the test split (flagged in data_info)
    num_classes, dim = len(splits.classes), train.features.shape[1]
    fit_started = time.perf_counter()
    if method == "logreg":
        metrics, details = logreg(train, val, test, probe, num_classes, val_is_test="test" not in found,
                                  metric=splits.metric)
        trainable = details["classifier_params"] = dim * num_classes + num_classes
    else:
        bank = train if "test" not in found else _joined(train, val)
        metrics, details = knn(train, val, test, bank, probe, num_classes, device)
        trainable = 0  # a k-NN classifier has no parameters: it keeps the training features
    fit_s = time.perf_counter() - fit_started
    time_s = time.perf_counter() - started
    record = dict(epoch=1, **metrics, lr=0.0, time_s=time_s, images_per_s=len(train.labels) / time_s,
                  trainable_params=trainable, freeze_phase="probe")
    extract_s = sum(split.extract_s for split in found.values())
    summary = {"method": method, "feature_dim": dim, "num_classes": num_classes, **details,
               "extract_s": extract_s, "fit_s": fit_s, "cache_hit": all(split.cache_hit for split in found.values()),
               "cache": {name: "hit" if split.cache_hit else "miss" for name, split in found.items()}, **used}
    log.info("%s probe: val acc %.2f%% test acc %.2f%% (features %s, %.1f s extracting, %.1f s fitting)",
             method, 100 * metrics["val_acc"], 100 * metrics["test_acc"],
             "cached" if summary["cache_hit"] else "extracted", extract_s, fit_s)
    return ProbeOutcome(record, summary, dim)


# ---------------------------------------------------------------- logistic regression

def logreg(train, val, test, probe: Logreg, num_classes: int, val_is_test: bool = False,
           metric: str = "top1", keep: dict | None = None, fit_on_val: bool = True) -> tuple[dict, dict]:
    """(epoch metrics, details for result.json). The grid is walked from the smallest C (strongest
    regularization) up, each fit warm-started from the previous one; C is chosen on val's `metric`.
    `keep`: given, its "model" is set to the final fitted classifier (LP-FT copies it into a head).
    `fit_on_val=False`: no fit sees val (cross-validation over train alone, no refit on train + val): LP-FT's
    head, whose fine-tuning then chooses its epoch on val."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    folds = probe.cv_folds_for(len(val.labels), val_is_test)
    train_only = val_is_test or not fit_on_val
    if probe.cv_folds == "auto":  # as many folds as the smallest class allows, at least 2, else C on val
        pool = train.labels if train_only else torch.cat([train.labels, val.labels])
        folds = min(folds, _smallest_class(pool.numpy()))
        folds = folds if folds >= 2 else 0
    if folds:
        return logreg_cv(train, val, test, probe, num_classes, val_is_test, metric, folds, keep, fit_on_val)
    scaler = StandardScaler().fit(train.features.numpy()) if probe.standardize else None
    x_train, x_val, x_test = (_scaled(scaler, split) for split in (train, val, test))
    y_train, y_val, y_test = (split.labels.numpy() for split in (train, val, test))
    grid = probe.grid()
    model = LogisticRegression(max_iter=probe.max_iter, warm_start=True)
    chosen_on = results.selection_field(metric).removeprefix("val_")  # "acc" or "mean_class_acc"
    val_scores, n_iter, selected, best, chosen = [], [], None, None, None
    # One BLAS thread: measured on the 2-core CPU under load, an L-BFGS fit on digits features took
    # 0.25 s with 1 OpenBLAS thread and 8.6 s with 2 (spinning threads descheduled); 10k x 1536: 3.9 vs 27 s.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded instead: n_iter == max_iter
        for value in grid:
            model.set_params(C=probe.C(value, len(y_train))).fit(x_train, y_train)
            scores = _scores(model, x_val, y_val, num_classes)
            val_scores.append(scores), n_iter.append(int(model.n_iter_.max()))
            if best is None or (scores[chosen_on], -scores["loss"]) > best:  # ties keep the stronger regularization
                best, selected, chosen = (scores[chosen_on], -scores["loss"]), copy.deepcopy(model), value
        final = selected
        if probe.refit_on == "train_val" and not train_only:
            final = LogisticRegression(C=probe.C(chosen, len(y_train) + len(y_val)), max_iter=probe.max_iter).fit(
                _stack(x_train, x_val), _stack(y_train, y_val))
    if keep is not None:
        keep["model"] = final if scaler is None else make_pipeline(scaler, final)
    metrics = _record(_scores(final, x_train, y_train, num_classes), val_scores[grid.index(chosen)],
                      _scores(final, x_test, y_test, num_classes))
    details = {**_penalty(probe, grid, chosen, final.C, len(y_train)), "C_chosen_on": f"val_{chosen_on}",
               "val_acc_grid": [v["acc"] for v in val_scores],
               "val_mean_class_acc_grid": [v["mean_class_acc"] for v in val_scores],
               "val_loss_grid": [v["loss"] for v in val_scores], "n_iter_grid": n_iter, "max_iter": probe.max_iter,
               "standardize": probe.standardize,
               "refit_on": probe.refit_on if not train_only else "train",
               "fit_images": len(y_train) + (len(y_val) if final is not selected else 0)}
    return metrics, details


def logreg_cv(train, val, test, probe: Logreg, num_classes: int, val_is_test: bool = False,
              metric: str = "top1", folds: int | None = None, keep: dict | None = None,
              fit_on_val: bool = True) -> tuple[dict, dict]:
    """logreg with C chosen by stratified `folds`-fold (default probe.cv_folds) cross-validation over train + val
    (train alone when val is the test split or `fit_on_val` is False): for each C, the mean over the folds of the held-out
    fold's `metric`, ties to the lower mean loss, then the smaller C; each fold standardized with
    its own training part's statistics (scikit-learn's Pipeline(StandardScaler, LogisticRegression)
    in GridSearchCV, the oracle in tests/test_probes.py). The chosen C is refitted on all of them.
    val_* in the record are the chosen C's cross-validated means (what it was chosen by)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    train_only = val_is_test or not fit_on_val
    pool = train if train_only else _joined(train, val)
    x_pool, y_pool = pool.features.numpy(), pool.labels.numpy()
    wanted = folds or probe.cv_folds
    smallest = _smallest_class(y_pool)
    if smallest < wanted:
        raise ConfigError(f"freeze.cv_folds={probe.cv_folds}: {wanted}-fold cross-validation needs {wanted} images of "
                          f"every class in {'train' if train_only else 'train + val'}, and one class has {smallest}; set freeze.cv_folds={max(smallest, 2)} "
                          "or fewer, or 0 (choose C on val)")
    folds = list(StratifiedKFold(n_splits=wanted, shuffle=True, random_state=0).split(x_pool, y_pool))
    grid = probe.grid()
    chosen_on = results.selection_field(metric).removeprefix("val_")

    def fitted(value, x, y):
        steps = [StandardScaler()] if probe.standardize else []
        return make_pipeline(*steps, LogisticRegression(C=probe.C(value, len(y)), max_iter=probe.max_iter)).fit(x, y)

    cv_scores, n_iter = [], []
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):  # one BLAS thread: see logreg
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded instead: n_iter == max_iter
        for c in grid:
            per_fold = []
            for fit_part, held_out in folds:
                model = fitted(c, x_pool[fit_part], y_pool[fit_part])
                per_fold.append(_scores(model, x_pool[held_out], y_pool[held_out], num_classes))
                n_iter.append(int(model[-1].n_iter_.max()))
            cv_scores.append(per_fold)
        means = [{key: float(np.mean([fold[key] for fold in per_fold])) for key in per_fold[0]}
                 for per_fold in cv_scores]
        best = max(range(len(grid)), key=lambda i: (means[i][chosen_on], -means[i]["loss"], -i))  # then the stronger
        final = fitted(grid[best], x_pool, y_pool)
    if keep is not None:
        keep["model"] = final
    x_train, x_test = train.features.numpy(), test.features.numpy()
    metrics = _record(_scores(final, x_train, train.labels.numpy(), num_classes), means[best],
                      _scores(final, x_test, test.labels.numpy(), num_classes))
    details = {**_penalty(probe, grid, grid[best], final[-1].C, len(folds[0][0])), "C_chosen_on": f"cv{wanted}_{chosen_on}",
               "cv_folds": wanted, "cv_fold_images": [len(held_out) for _, held_out in folds],
               "cv_acc_folds": [[fold["acc"] for fold in per_fold] for per_fold in cv_scores],
               "val_acc_grid": [m["acc"] for m in means], "val_mean_class_acc_grid": [m["mean_class_acc"] for m in means],
               "val_loss_grid": [m["loss"] for m in means], "n_iter_grid": n_iter, "max_iter": probe.max_iter,
               "standardize": probe.standardize, "refit_on": "train" if train_only else "train_val",
               "fit_images": len(y_pool)}
    return metrics, details


def as_linear(fitted, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight (classes, features), bias (classes,)) of a linear layer whose logits give the fitted logistic
    regression's probabilities, its standardisation folded in (x -> (x - mean) / scale: weight / scale, bias -
    (weight / scale) @ mean); a two-class fit's one row w becomes -w/2 and +w/2 (the same softmax)."""
    steps = [step for _, step in fitted.steps] if hasattr(fitted, "steps") else [fitted]
    classifier = steps[-1]
    weight, bias = classifier.coef_.astype(np.float64), classifier.intercept_.astype(np.float64)
    for scaler in steps[:-1]:  # StandardScaler(s) before it
        weight = weight / scaler.scale_
        bias = bias - weight @ scaler.mean_
    if num_classes == 2 and weight.shape[0] == 1:
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    return weight, bias


def _penalty(probe: Logreg, grid: list[float], chosen: float, final_c: float, fit_images: int) -> dict:
    """result.json's account of the regularization: C searched and chosen (for an l2_grid, the C of its
    strengths at `fit_images`, a selection fit's size) and the final model's C; and the L2 strengths, if any."""
    if probe.l2_grid is None:
        return {"C": chosen, "C_grid": grid}
    return {"C": final_c, "C_grid": [probe.C(value, fit_images) for value in grid], "l2": chosen, "l2_grid": grid}


def _smallest_class(labels: np.ndarray) -> int:
    """Images of the rarest class present in `labels`."""
    counts = np.bincount(labels)
    return int(counts[counts > 0].min()) if len(labels) else 0


def _scaled(scaler, split):
    x = split.features.numpy()
    return scaler.transform(x) if scaler is not None else x


def _stack(a, b):
    return np.concatenate([a, b])


def scores(fitted, split, num_classes: int) -> dict:
    """acc, mean_class_acc and loss of a fitted classifier (logreg's `keep`) on one split's features."""
    return _scores(fitted, split.features.numpy(), split.labels.numpy(), num_classes)


def _scores(model, x, y, num_classes: int) -> dict:
    """acc (top-1), mean_class_acc and loss (mean cross-entropy) with a probability column for
    every class, also ones the model never saw."""
    from sklearn.metrics import log_loss

    proba = np.zeros((len(y), num_classes))
    proba[:, model.classes_] = model.predict_proba(x)
    proba /= proba.sum(1, keepdims=True)  # float32 features give float32 rows that sum to 1 only to 1e-7
    predicted = proba.argmax(1)
    return {"acc": float((predicted == y).mean()), "mean_class_acc": _mean_class_acc(predicted, y, num_classes),
            "loss": float(log_loss(y, proba, labels=list(range(num_classes))))}


def _mean_class_acc(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """engine.evaluate's mean per-class accuracy (over the classes present in `labels`)."""
    totals = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels[predicted == labels], minlength=num_classes)
    return engine.mean_class_accuracy(hits.tolist(), totals.tolist())


def _record(train: dict, val: dict, test: dict) -> dict:
    """The epoch record's metrics from each split's scores; train's are top-1 only, as in training."""
    return dict(train_loss=train["loss"], train_acc=train["acc"], val_loss=val["loss"], val_acc=val["acc"],
                val_mean_class_acc=val["mean_class_acc"], test_loss=test["loss"], test_acc=test["acc"],
                test_mean_class_acc=test["mean_class_acc"])


# ---------------------------------------------------------------- k-NN

def knn(train, val, test, bank, probe: Knn, num_classes: int, device) -> tuple[dict, dict]:
    k = min(probe.k, len(train.labels) - 1)  # leave-one-out on train has one image fewer
    scores = {}
    for name, queries, voters, leave_out in (("train", train, train, True), ("val", val, train, False),
                                             ("test", test, bank, False)):
        proba = knn_proba(voters.features, voters.labels, queries.features, k, probe.temperature, num_classes,
                          device, leave_one_out=leave_out)
        labels = queries.labels.to(proba.device)
        predicted = proba.argmax(1)
        scores[name] = {"acc": (predicted == labels).float().mean().item(),
                        "mean_class_acc": _mean_class_acc(predicted.cpu().numpy(), labels.cpu().numpy(), num_classes),
                        "loss": -proba.gather(1, labels[:, None]).clamp_min(KNN_PROB_FLOOR).log().mean().item()}
    metrics = _record(scores["train"], scores["val"], scores["test"])
    details = {"k": probe.k, "k_used": k, "temperature": probe.temperature,
               "bank": {"train": "train, leaving each image out", "val": "train",
                        "test": "train + val" if bank is not train else "train"},
               "bank_images": len(bank.labels)}
    return metrics, details


@torch.no_grad()
def knn_proba(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int, temperature: float,
              num_classes: int, device=None, leave_one_out: bool = False) -> torch.Tensor:
    """Normalised weighted votes (queries x classes): the k most cosine-similar bank rows vote
    for their label with weight exp(sim / temperature). The weights are computed relative to
    the best match (exp((sim - max) / T)), which leaves the normalised votes unchanged and cannot
    overflow. `leave_one_out`: the queries are the bank itself and no row votes for itself."""
    device = device or bank.device
    bank = F.normalize(bank.to(device).float(), dim=1)
    bank_labels = bank_labels.to(device)
    queries = F.normalize(queries.to(device).float(), dim=1)
    out = []
    for start in range(0, len(queries), QUERY_CHUNK):
        sim = queries[start:start + QUERY_CHUNK] @ bank.T
        if leave_one_out:
            rows = torch.arange(len(sim), device=device)
            sim[rows, rows + start] = -float("inf")
        top, index = sim.topk(k, dim=1)
        weights = ((top - top[:, :1]) / temperature).exp()
        votes = torch.zeros(len(sim), num_classes, device=device).scatter_add_(1, bank_labels[index], weights)
        out.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(out)


def _joined(a, b):
    return features.SplitFeatures(torch.cat([a.features, b.features]), torch.cat([a.labels, b.labels]),
                                  a.cache_hit and b.cache_hit, 0.0)
