"""Resizing of position embeddings and prompt coordinates to another token grid (torch only, remote-code safe)."""

import torch
import torch.nn.functional as F


def resize_position_embeddings(
    pos_embed: torch.Tensor, new_size: tuple[int, int], interpolation: str = "bicubic", antialias: bool = True
) -> torch.Tensor:
    """Resample absolute position embeddings `(1, H, W, C)` to `(1, *new_size, C)`.

    Returns the input unchanged when the grid already matches, so the pretraining size stays bit-identical to SAM.
    Interpolates in float32 and casts back, as timm's `resample_abs_pos_embed_nhwc` does.
    """
    if tuple(pos_embed.shape[1:3]) == tuple(new_size):
        return pos_embed
    dtype = pos_embed.dtype
    resized = F.interpolate(
        pos_embed.permute(0, 3, 1, 2).float(),
        size=tuple(new_size),
        mode=interpolation,
        antialias=antialias and interpolation in ("bilinear", "bicubic"),
        align_corners=False,
    )
    return resized.permute(0, 2, 3, 1).to(dtype)


def rescale_prompt_coordinates(
    coords: torch.Tensor, input_size: tuple[int, int], reference_size: tuple[int, int]
) -> torch.Tensor:
    """Map `(..., 2)` pixel `(x, y)` coordinates of an `input_size = (height, width)` image to the frame of
    `reference_size`, such that SAM's prompt encoder, which embeds `(p + 0.5) / reference`, embeds
    `(p + 0.5) / input` (the pixel-centre convention of SAM is kept exactly)."""
    if tuple(input_size) == tuple(reference_size):
        return coords
    ratio = torch.tensor(
        [reference_size[1] / input_size[1], reference_size[0] / input_size[0]],
        dtype=coords.dtype,
        device=coords.device,
    )
    return (coords + 0.5) * ratio - 0.5
