"""The one training step: forward (bf16 autocast where asked), the training loss (cross-entropy
with label smoothing, or against mixup / cutmix's soft targets; on sigmoid outputs under write-up C's
`sigmoid_before_loss` defect; plus L2-SP's penalty where asked),
backward, gradient clipping (by value, then by norm), the optimizer step. The training loop
(engine.train_one_epoch), its compile warm-up, the LR finder and the benchmark all step through
here, so a change to the loss or the clipping is made once and the benchmark times the product's
own step. (bf16 autocast needs no GradScaler: there is no scaler step.)"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(kw_only=True)
class StepOptions:
    """How a batch is stepped; engine.TrainOptions adds how the epochs around it run."""
    amp: bool = False                   # bf16 autocast
    channels_last: bool = False
    label_smoothing: float = 0.0        # training loss only (evaluate never smooths)
    sigmoid_before_loss: bool = False   # write-up C's defect: cross-entropy on sigmoid(logits); predictions unchanged
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    mix: Callable | None = None         # timm's Mixup (mixup / cutmix of each batch; it smooths the targets itself)
    penalty: Callable | None = None     # penalty(model) -> a term added to the training loss (L2SP)


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def loss_input(logits: torch.Tensor, options: StepOptions) -> torch.Tensor:
    """What the cross-entropy sees: the logits in float32, or write-up C's sigmoid of them."""
    return torch.sigmoid(logits.float()) if options.sigmoid_before_loss else logits.float()


def forward_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 options: StepOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(training loss, logits) of a batch already on the model's device; under `options.mix`, of the mixed batch
    against its soft targets (timm's SoftTargetCrossEntropy: the mean over images of -sum(target x log p))."""
    targets = None
    if options.mix is not None:
        images, targets = mixed(options.mix, images, labels)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=options.amp):
        logits = model(images)
    if targets is None:
        loss = F.cross_entropy(loss_input(logits, options), labels, label_smoothing=options.label_smoothing)
    else:
        loss = torch.sum(-targets * F.log_softmax(loss_input(logits, options), dim=-1), dim=-1).mean()
    return (loss + options.penalty(model) if options.penalty is not None else loss), logits


class L2SP:
    """L2-SP's penalty (Li, Grandvalet & Davoine 2018): alpha / 2 x |w - w0|^2 over `body` (parameters, with
    their starting values w0 taken now) + beta / 2 x |w|^2 over `head`; a frozen parameter adds nothing."""

    def __init__(self, body: list[nn.Parameter], head: list[nn.Parameter], alpha: float, beta: float):
        self.body = [(param, param.detach().clone()) for param in body]
        self.head, self.alpha, self.beta = head, alpha, beta

    def __call__(self, model: nn.Module) -> torch.Tensor:
        total = torch.zeros((), device=self.head[0].device if self.head else None)
        if self.alpha:
            if self.body and self.body[0][1].device != self.body[0][0].device:  # the model moved since: once
                self.body = [(param, start.to(param.device)) for param, start in self.body]
            total = total + self.alpha / 2 * sum(((p - start) ** 2).sum() for p, start in self.body if p.requires_grad)
        if self.beta:
            total = total + self.beta / 2 * sum((p ** 2).sum() for p in self.head if p.requires_grad)
        return total


def mixed(mix: Callable, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed images, soft targets) of a batch by timm's Mixup, which pairs each image with the batch reversed
    and so needs an even count: an odd batch's last image goes through unmixed, its target smoothed as Mixup's."""
    from timm.data.mixup import mixup_target

    even = len(images) - len(images) % 2
    if even == 0:
        return images, mixup_target(labels, mix.num_classes, 1.0, mix.label_smoothing)
    paired, targets = mix(images[:even].clone(), labels[:even])  # Mixup works in place: the batch stays as it was
    if even == len(images):
        return paired, targets
    single = mixup_target(labels[even:], mix.num_classes, 1.0, mix.label_smoothing)
    return torch.cat([paired, images[even:]]), torch.cat([targets, single])


def clip_gradients(model: nn.Module, options: StepOptions) -> None:
    params = [p for p in model.parameters() if p.grad is not None]
    if options.clip_grad_value is not None:
        nn.utils.clip_grad_value_(params, options.clip_grad_value)
    if options.clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(params, options.clip_grad_norm)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
               device: torch.device, options: StepOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns (the detached loss, the count of correct top-1
    predictions), both left on the device so that the caller decides when to read them."""
    images, labels = to_device(images, labels, device, options.channels_last)
    loss, logits = forward_loss(model, images, labels, options)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(model, options)
    optimizer.step()
    return loss.detach(), (logits.argmax(1) == labels).sum()
