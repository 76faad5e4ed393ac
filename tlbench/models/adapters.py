"""Parameter-efficient fine-tuning's parameter sets: LoRA adapters injected by Hugging Face peft
(`freeze=lora`) and the normalisation-layer parameters BitFit trains (`freeze=bitfit`).

LoRA goes in with `peft.inject_adapter_in_model`, which swaps each targeted layer for a peft
layer in place (no wrapper model), so the run's model keeps its class, its head and its
`forward`; the targeted layer's own weight becomes `<layer>.base_layer.weight` and its adapter
`<layer>.lora_A.default.weight` / `lora_B`. Which layers, by default (`target_modules: auto`):
a transformer's attention projections (`qkv` and the attention's output `proj`, as timm names
them), else every ungrouped Conv2d (a depthwise convolution has no low-rank update worth the
name). The head is never targeted: it is new and trains fully. Saving merges the adapters into
the weights (peft's `merge`), so the saved model is the plain architecture."""

import copy
import re

from torch import nn

ADAPTER_MARK = "lora_"
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def norm_param_names(model: nn.Module) -> list[str]:
    """Parameters of normalisation layers (BatchNorm, GroupNorm, LayerNorm, InstanceNorm and
    subclasses, e.g. timm's BatchNormAct2d and LayerNorm2d): their affine scale and shift."""
    return [f"{module_name}.{name}" if module_name else name
            for module_name, module in model.named_modules() if isinstance(module, NORM_TYPES)
            for name, _ in module.named_parameters(recurse=False)]


def adapter_param_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters() if ADAPTER_MARK in name]


def default_targets(model: nn.Module, head_module: str) -> list[str]:
    """Module names LoRA adapts when `target_modules` is auto (see the module docstring)."""
    attention = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)
                 and re.search(r"(^|\.)(qkv|attn\.proj)$", name)]
    if attention:
        return attention
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d) and module.groups == 1
            and not _inside(name, head_module)]


def inject_lora(model: nn.Module, head_module: str, rank: int, alpha: float, dropout: float,
                target_modules="auto") -> dict:
    """Adds LoRA adapters to `model` in place; returns what was done, for result.json. A list in
    `target_modules` holds regular expressions matched against the module names (re.fullmatch)."""
    from peft import LoraConfig, inject_adapter_in_model

    if target_modules == "auto":
        targets = default_targets(model, head_module)
    else:
        patterns = [re.compile(p) for p in target_modules]
        targets = [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))
                   and any(p.fullmatch(name) for p in patterns) and not _inside(name, head_module)]
    if not targets:
        from tlbench.errors import ConfigError
        raise ConfigError(f"freeze.target_modules={target_modules!r} matches no Linear or Conv2d layer of this model "
                          f"outside its head; give regular expressions of its module names, or auto")
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets), model)
    return {"targets": len(targets), "first_targets": targets[:5], "rank": rank, "alpha": alpha, "dropout": dropout,
            "adapter_params": sum(p.numel() for n, p in model.named_parameters() if ADAPTER_MARK in n)}


def merged(model: nn.Module, state: dict | None = None) -> nn.Module:
    """A copy of `model` (holding `state`, when given: a state_dict of the adapted model) with
    every LoRA adapter merged into its layer's weight and the peft layer replaced by that plain
    layer: the architecture the model was built as. `model` itself is unchanged."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    plain = copy.deepcopy(model)
    if state is not None:
        plain.load_state_dict(state)
    wrapped = [(name, module) for name, module in plain.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in wrapped:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(plain.get_submodule(parent_name) if parent_name else plain, child, module.get_base_layer())
    return plain


def _inside(name: str, head_module: str) -> bool:
    return bool(head_module) and (name == head_module or name.startswith(head_module + "."))
