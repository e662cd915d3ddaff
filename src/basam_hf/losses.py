"""Fine-tuning losses: ground truth on SAM's low-resolution mask grid, BCE + Dice, and SAM's multimask recipe."""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .constants import LOSSES

DICE_SMOOTH = 1.0


def mask_targets(
    masks: Sequence[np.ndarray],
    reshaped_sizes: Sequence[Sequence[int]],
    input_size: tuple[int, int],
    mask_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth on the decoder's low-resolution mask grid, and which cells count.

    The processor resizes each image to `reshaped_sizes[i]` and pads it (bottom/right) to `input_size`; the decoder's
    masks of shape `mask_size` cover that padded input. Each boolean mask is resized to the cells covering the
    resized image (their number rounded half up, as the processor rounds) by area averaging when it shrinks (a cell's
    value is the fraction of object in it) and bilinearly when it grows; the padding cells get target 0 and weight 0.

    Returns:
        `targets` (batch, h, w) in [0, 1] and `valid` (batch, h, w) in {0, 1}, float32.
    """
    height, width = mask_size
    targets = torch.zeros(len(masks), height, width)
    valid = torch.zeros(len(masks), height, width)
    for index, (mask, reshaped) in enumerate(zip(masks, reshaped_sizes)):
        rows = min(height, max(1, int(reshaped[0] * height / input_size[0] + 0.5)))
        cols = min(width, max(1, int(reshaped[1] * width / input_size[1] + 0.5)))
        full = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        shrinks = rows <= full.shape[-2] and cols <= full.shape[-1]
        resized = (
            F.interpolate(full, (rows, cols), mode="area")
            if shrinks
            else F.interpolate(full, (rows, cols), mode="bilinear", align_corners=False)
        )
        targets[index, :rows, :cols] = resized[0, 0].clamp(0.0, 1.0)
        valid[index, :rows, :cols] = 1.0
    return targets, valid


def segmentation_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, loss: str = "bce-dice"
) -> torch.Tensor:
    """Per-mask loss `(batch, masks)` of logits `(batch, masks, h, w)` against soft targets `(batch, h, w)` over the
    valid cells: BCE (mean over valid cells) and/or soft Dice `1 - (2 sum(p t) + 1) / (sum p + sum t + 1)`, summed.
    Computed in float32."""
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}; use one of {', '.join(LOSSES)}.")
    logits = logits.float()
    targets = targets[:, None].to(logits)
    weight = valid[:, None].to(logits)
    total = logits.new_zeros(logits.shape[:2])
    if "bce" in LOSSES[loss]:
        bce = F.binary_cross_entropy_with_logits(logits, targets.expand_as(logits), reduction="none")
        total = total + (bce * weight).sum((-2, -1)) / weight.sum((-2, -1)).clamp_min(1.0)
    if "dice" in LOSSES[loss]:
        probs = torch.sigmoid(logits) * weight
        intersection = (probs * targets).sum((-2, -1))
        denominator = probs.sum((-2, -1)) + (targets * weight).sum((-2, -1))
        total = total + 1.0 - (2.0 * intersection + DICE_SMOOTH) / (denominator + DICE_SMOOTH)
    return total


def mask_iou(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """IoU `(batch, masks)` of the masks `logits > 0` with `targets >= 0.5`, over the valid cells (1 when both are
    empty)."""
    keep = valid[:, None] > 0
    predicted = (logits > 0) & keep
    truth = (targets[:, None] >= 0.5) & keep
    intersection = (predicted & truth).sum((-2, -1)).float()
    union = (predicted | truth).sum((-2, -1)).float()
    return torch.where(union > 0, intersection / union.clamp_min(1.0), torch.ones_like(union))


def training_loss(
    pred_masks: torch.Tensor,
    iou_scores: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    loss: str = "bce-dice",
    multimask: bool = False,
) -> torch.Tensor:
    """The batch loss from the model's `pred_masks` `(batch, 1, masks, h, w)` and `iou_scores` `(batch, 1, masks)`
    (one prompt per image): the mean per-image mask loss (with `multimask`, the best mask's: SAM's ambiguity-aware
    recipe) plus the MSE of the IoU predictions against the masks' actual IoUs. The IoU term is there for one mask
    too, as in SAM: without it the IoU head never learns, and the three-mask choice and the automatic mask
    generator's `pred_iou_thresh` filter read its output."""
    logits = pred_masks[:, 0]
    per_mask = segmentation_loss(logits, targets, valid, loss)
    mask_loss = per_mask.min(dim=1).values.mean() if multimask else per_mask[:, 0].mean()
    iou_target = mask_iou(logits.detach(), targets, valid)
    return mask_loss + F.mse_loss(iou_scores[:, 0].float(), iou_target)


__all__ = ["mask_iou", "mask_targets", "segmentation_loss", "training_loss"]
