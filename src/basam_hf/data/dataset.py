"""The dataset type every source of `basam_hf.data` returns: samples `{"id", "image", "mask"}` under ids known
without decoding anything, and the error that replaces an unusable sample."""

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch


class SampleError(ValueError):
    """A sample that cannot be evaluated; `sample_id` names it and `reason` says why (one line)."""

    def __init__(self, sample_id: str, reason: str):
        super().__init__(f"sample {sample_id!r}: {reason}")
        self.sample_id = sample_id
        self.reason = reason


class SegmentationDataset(torch.utils.data.Dataset):
    """Samples `{"id", "image", "mask"}` with ids known without decoding anything (for sharding and resume).

    `__getitem__` raises [`SampleError`] for a sample that cannot be used. `info` describes the source (source,
    split, columns, preset, number of excluded objects) for reports.
    """

    def __init__(self, ids: Sequence[str], read: Callable[[int], dict], info: dict):
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"Sample ids must be unique; {len(ids) - len(set(ids))} duplicates in {info.get('source')}."
            )
        self.ids = list(ids)
        self._read = read
        self.info = info

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        return self._read(index)

    def subset(self, indices: Sequence[int]) -> "SegmentationDataset":
        """The samples at `indices` (in that order), sharing this dataset's reader."""
        indices = list(indices)
        return SegmentationDataset([self.ids[i] for i in indices], lambda i: self._read(indices[i]), dict(self.info))


def concatenate_segmentation_datasets(*parts: SegmentationDataset) -> SegmentationDataset:
    """The samples of `parts`, one after the other (ids must stay unique); `info["parts"]` lists the parts' infos."""
    starts = np.cumsum([0] + [len(part) for part in parts])

    def read(index: int) -> dict:
        part = int(np.searchsorted(starts, index, side="right")) - 1
        return parts[part][index - int(starts[part])]

    ids = [sample_id for part in parts for sample_id in part.ids]
    info = {"source": " + ".join(str(part.info.get("source")) for part in parts), "split": None}
    info["nonempty_masks"] = all(part.info.get("nonempty_masks") for part in parts)
    info["min_image_side"] = min(part.info.get("min_image_side", 0) for part in parts)
    return SegmentationDataset(ids, read, info | {"parts": [part.info for part in parts]})


def iter_samples(dataset: SegmentationDataset) -> Iterable[dict | SampleError]:
    """Every sample of `dataset`, or the [`SampleError`] that replaced it (for scripts that report bad samples)."""
    for index in range(len(dataset)):
        try:
            yield dataset[index]
        except SampleError as error:
            yield error
