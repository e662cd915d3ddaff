"""Where a run executes and how it reports progress: an `accelerate.Accelerator` that works under any launcher, and
progress bars shown by one process only."""

import os

import torch
from tqdm.auto import tqdm


def _on_cpu(cpu: bool) -> bool:
    """Whether accelerate must be told `cpu=True`: when asked, or when the processes were started by a distributed
    launcher (torchrun, `accelerate launch --multi_gpu`) on a machine without an accelerator device. accelerate only
    sets up multi-process CPU (gloo) when told so, and would otherwise run each process alone on the whole dataset."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return cpu or (launched and not has_device)


def make_accelerator(cpu: bool = False, **kwargs):
    """An `Accelerator` (`kwargs` passed on) that works under any launcher (see [`process_state`])."""
    from accelerate import Accelerator  # accelerate imports slowly; only runs that train or evaluate need it

    return Accelerator(cpu=_on_cpu(cpu), **kwargs)


def process_state(cpu: bool = False):
    """accelerate's `PartialState` (which process this is, `wait_for_everyone`), set up as [`make_accelerator`] sets
    it up. The state is shared by the whole process: created first with other settings (a plain `PartialState()` on a
    CPU machine), it would make every launched process a main process of its own, also for the Accelerator made
    later."""
    from accelerate import PartialState  # accelerate imports slowly

    return PartialState(cpu=_on_cpu(cpu))


def progress_bar(accelerator, iterable=None, **kwargs):
    """A tqdm bar on the local main process only. `disable` is passed only to silence the other processes: an
    explicit value would override the `TQDM_*` environment variables (e.g. `TQDM_DISABLE=1`) on the main one."""
    if not accelerator.is_local_main_process:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


__all__ = ["make_accelerator", "process_state", "progress_bar"]
