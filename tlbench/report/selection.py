"""How far to trust a val-selected number: how many val images chose it (result.json
data_info.val_size) and the binomial standard error of the val accuracy at the chosen epoch
(Agresti-Coull's, `standard_error`: never 0, also at 100%). Selections made on fewer than
SMALL_VAL images are flagged with MARK and explained by one footnote (`footnote`)."""

from __future__ import annotations

import math

import pandas as pd

from tlbench.report.metrics import select_rules
from tlbench.specs import PROBES

# Below this many val images one image moves val accuracy by 1 point or more, and epochs (or
# settings) tie often: issue 22's 25 val images moved it in 4-point steps.
SMALL_VAL = 100
MARK = "†"


def add_selection_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` (with run_metrics' best_val_acc) plus val_size, best_val_acc_se and small_val (a
    selection on fewer than SMALL_VAL val images; a probe that chose by cross-validation
    (probe.C_chosen_on cv5_acc, ...) chose on train + val, and a fine-tuning run that took its last epoch
    (select_epoch or random_init_select_epoch final) chose nothing: neither is flagged)."""
    size = pd.to_numeric(runs.get("data_info.val_size", pd.Series(math.nan, index=runs.index)), errors="coerce")
    p = pd.to_numeric(runs.get("best_val_acc", pd.Series(math.nan, index=runs.index)), errors="coerce")
    chosen_on = runs.get("probe.C_chosen_on", pd.Series("", index=runs.index)).fillna("").astype(str)
    probe = runs.get("config.freeze.name", pd.Series(None, index=runs.index, dtype=object)).isin(PROBES)
    took_last = pd.Series([rule == "final" for rule in select_rules(runs)], index=runs.index) & ~probe
    return runs.assign(val_size=size, best_val_acc_se=standard_error(p, size),
                       small_val=(size < SMALL_VAL) & ~chosen_on.str.startswith("cv") & ~took_last)


Z = 1.96  # the 95% normal quantile of the Agresti-Coull adjustment


def standard_error(p, n):
    """Binomial standard error of an accuracy p measured on n images (NaN without n), Agresti and
    Coull's (1998): add Z^2/2 successes and failures, n~ = n + Z^2, p~ = (p n + Z^2/2) / n~, then
    sqrt(p~ (1 - p~) / n~). The plain sqrt(p (1 - p) / n) is 0 when all 17 val images are right,
    which would read as certainty; p~ is the centre of the Wilson interval."""
    n_adjusted = n + Z ** 2
    p_adjusted = (p * n + Z ** 2 / 2) / n_adjusted
    return (p_adjusted * (1 - p_adjusted) / n_adjusted) ** 0.5


def group_columns(group: pd.DataFrame) -> dict:
    """A group's (seeds') selection facts: the fewest val images, the mean of the seeds' standard
    errors (val_acc_se), and whether any seed's selection is small."""
    return {"val_size": group["val_size"].min(), "val_acc_se": group["best_val_acc_se"].mean(),
            "small_val": bool(group["small_val"].eq(True).any())}


def marked(text: str, small) -> str:
    return f"{text}{MARK}" if small == True else text  # noqa: E712 - numpy bools; NaN reads as no


def chosen_by(val_size, se, small) -> str:
    """"25 (SE 6.5)†": the val images that chose, and the standard error of val accuracy there, in points."""
    if val_size is None or (isinstance(val_size, float) and math.isnan(val_size)):
        return "–"
    error = "" if se is None or (isinstance(se, float) and math.isnan(se)) else f" (SE {100 * se:.1f})"
    return marked(f"{int(val_size)}{error}", small)


def footnote(frame: pd.DataFrame) -> list[str]:
    """The one line explaining MARK, when some row of `frame` carries it."""
    if "small_val" not in frame.columns or not frame["small_val"].eq(True).any():
        return []
    return [f"{MARK} chosen on fewer than {SMALL_VAL} val images: one image moves val accuracy by 1 point or more "
            "and epochs or settings tie easily, so this val-selected number is noisy (SE: the binomial standard "
            "error of the val accuracy, Agresti-Coull, in points). Hold out more: a larger dataset.val_split (e.g. an image "
            "count: dataset.val_split=200), or for freeze=logreg choose C by cross-validation: freeze.cv_folds=5."]
