"""Optimizers by name (the `optimizer` group), built over exactly the trainable parameters."""

import torch
from torch import nn

from tlbench.errors import ConfigError
from tlbench.training.freeze import Phase

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class OptimizerFactory:
    """Holds the optimizer settings; `build(model, phase)` is called at every phase change, so the
    optimizer never holds a frozen parameter (and weight decay never touches one)."""

    def __init__(self, name: str, lr: float, weight_decay: float = 0.0, filter_bias_and_bn: bool = True,
                 fused: bool = False, decay_per_lr: bool = False, **kwargs):
        """`filter_bias_and_bn`: no weight decay on 1-D parameters (biases, normalization scales and
        shifts) nor on the model's own `no_weight_decay()` names (position embeddings, class
        tokens), timm's rule (`create_optimizer_v2`); false decays every parameter, as plain torch.
        `fused`: one CUDA kernel for the whole update (set by the run on CUDA, not by users). A
        user's `optimizer.foreach` (true or false) picks the implementation instead: torch refuses
        fused and foreach together, so fused is then left off. `decay_per_lr`: the optimizer's weight decay
        is `weight_decay / lr`, so that lr x decay, the shrink of each step, is `weight_decay` whatever the
        lr (Kornblith et al. 2019's grid, as SimCLR's and BYOL's appendices state it: "we divide these
        values of weight decay by the learning rate")."""
        if name not in OPTIMIZERS:
            raise ConfigError(f"optimizer.name={name!r} is not known; use one of {', '.join(OPTIMIZERS)}")
        if lr <= 0:
            raise ConfigError(f"optimizer.lr={lr} must be positive")
        weight_decay = weight_decay / lr if decay_per_lr else weight_decay
        self.name, self.lr, self.weight_decay, self.kwargs = name, lr, weight_decay, kwargs
        self.fused = fused and "foreach" not in kwargs
        self.filter_bias_and_bn = filter_bias_and_bn
        if "betas" in kwargs:
            self.kwargs["betas"] = tuple(kwargs["betas"])
        extra = {"fused": True} if self.fused else {}
        try:  # fail on a bad keyword, or one the fused kernels refuse, now rather than at the first phase change
            OPTIMIZERS[name]([nn.Parameter(torch.zeros(1))], lr=lr, weight_decay=weight_decay, **self.kwargs, **extra)
        except (TypeError, ValueError, RuntimeError) as err:
            refused_by_fused = self.fused and "fused" in str(err)
            hint = ("; on CUDA tlbench uses the fused kernels (fused=True): add +optimizer.foreach=true (or false) "
                    "to use the foreach (or single-tensor) kernels instead" if refused_by_fused else "")
            raise ConfigError(f"optimizer={name}: {err}{hint}") from err

    def build(self, model: nn.Module, phase: Phase) -> torch.optim.Optimizer:
        params = dict(model.named_parameters())
        exempt = no_weight_decay_names(model) if self.filter_bias_and_bn and self.weight_decay else set()
        groups = []
        for group in phase.groups:
            lr = group.lr if group.lr is not None else self.lr * group.lr_scale
            for decay, names in ((self.weight_decay, [n for n in group.names if n not in exempt]),
                                 (0.0, [n for n in group.names if n in exempt])):
                if names:
                    groups.append({"params": [params[n] for n in names], "lr": lr, "base_lr": lr,
                                   "weight_decay": decay})
        extra = {"fused": True} if self.fused else {}
        return OPTIMIZERS[self.name](groups, lr=self.lr, weight_decay=self.weight_decay, **self.kwargs, **extra)


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """timm's rule (timm.optim.param_groups_weight_decay): 1-D tensors, biases, and the names the
    model lists in `no_weight_decay()`."""
    listed = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    return {n for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith(".bias") or n in listed}


def carry_state(previous: torch.optim.Optimizer, optimizer: torch.optim.Optimizer) -> None:
    """Hands the state of every parameter `previous` trained that `optimizer` also trains on to
    it (Adam's step count and moments, SGD's momentum buffer): what one optimizer kept across a
    phase change would have. Parameters new to `optimizer` start fresh, as in torch."""
    trained = {p for group in optimizer.param_groups for p in group["params"]}
    for param, state in previous.state.items():
        if param in trained:
            optimizer.state[param] = state
