"""WiSE-FT (Wortsman et al., CVPR 2022): the weights of the starting model (pretrained backbone and the new
head as initialised) and of the fine-tuned one, interpolated, (1 - alpha) x start + alpha x end for every
floating-point tensor (BatchNorm statistics too; integer counters keep the fine-tuned value), each mix scored
on val and test. The mixing coefficient is chosen on val; alpha 1 is the fine-tuned model, alpha 0 the start.

Under `wise_ft_bn=recompute` the BatchNorm statistics of every mix strictly between the endpoints are measured
anew on training batches (torch.optim.swa_utils.update_bn, as for SWA's averaged weights) instead of
interpolated: the statistics of averaged weights are not the average of the statistics (Jordan et al., REPAIR,
ICLR 2023), and with BatchNorm networks the interpolated ones can sink a mix toward chance. The endpoints keep
their own statistics, so alpha 0 and 1 stay the starting and fine-tuned models."""

from collections.abc import Callable
from itertools import islice

import torch
from torch import nn

from tlbench.specs.shared import WISE_BN_RULES
from tlbench.training import engine


BN_BATCHES = 50  # training batches that measure a mix's BatchNorm statistics (all of them on a smaller split)


def bn_recompute(loader, device) -> Callable[[nn.Module], None]:
    """Sets a model's BatchNorm running statistics to those of its activations over the first BN_BATCHES
    batches of `loader` ((images, labels) batches; torch's update_bn: a cumulative average, train mode,
    no gradients), the model's train/eval mode kept."""
    from torch.optim.swa_utils import update_bn

    return lambda model: update_bn(islice(loader, BN_BATCHES), model, device)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of `model`'s weights as they are now (the start: taken before training)."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def interpolated(start: dict, end: dict, alpha: float) -> dict:
    return {name: torch.lerp(start[name].to(value.dtype), value, alpha) if value.is_floating_point() else value
            for name, value in end.items()}


def curve(model: nn.Module, start: dict, alphas: list[float], val_loader, test_loader, device, options,
          select_on: str, val_is_test: bool = False, also: Callable[[nn.Module], dict] | None = None,
          recompute_bn: Callable[[nn.Module], None] | None = None) -> dict:
    """result.json `wise_ft`: val and test scores at each alpha (and what `also` finds for the mixed model, e.g.
    its accuracy under corruptions), and the alpha val chose (the data set's metric, then the lower val loss,
    then the larger alpha). With `recompute_bn` (bn_recompute's), each mix strictly between 0 and 1 has its
    BatchNorm statistics measured anew before it is scored. `model` is left with its fine-tuned weights."""
    end = snapshot(model)
    rows = []
    try:
        for alpha in alphas:
            model.load_state_dict(interpolated(start, end, alpha))
            if recompute_bn is not None and 0 < alpha < 1:
                recompute_bn(model)
            scored = options.eval_view(model) if options.eval_view else model
            val = engine.evaluate(scored, val_loader, device, options)
            test = engine.evaluate(scored, test_loader, device, options) if test_loader is not None else val
            rows.append({"alpha": alpha, "val_loss": val[0], "val_acc": val[1], "val_mean_class_acc": val[2],
                         "test_loss": test[0], "test_acc": test[1], "test_mean_class_acc": test[2],
                         **(also(model) if also is not None else {})})
    finally:
        model.load_state_dict(end)
    best = max(rows, key=lambda row: (row[select_on], -row["val_loss"], row["alpha"]))
    return {"alphas": list(alphas), "bn": WISE_BN_RULES[recompute_bn is not None], "curve": rows, "chosen_alpha": best["alpha"],
            "chosen_on": select_on + (" (val is the test split)" if val_is_test else "")}
