"""A fine-tuning run's logs: an accelerate tracker writing one JSON object per logged step (`logs/metrics.jsonl`,
with the run's record in `logs/run_config.json`), reading that log back, and dropping what an interrupted run logged
after its last checkpoint."""

import json
import os
from pathlib import Path

from accelerate.tracking import GeneralTracker

LOGS_DIR = "logs"
METRICS_LOG = "metrics.jsonl"
RUN_CONFIG_FILE = "run_config.json"


class JsonLinesTracker(GeneralTracker):
    """An accelerate tracker writing one JSON object per `log` call (`{"step": ..., **values}`) to a file, and the
    run configuration to `run_config.json` next to it."""

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)

    @property
    def tracker(self) -> Path:
        return self.path

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def store_init_configuration(self, values: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(values, indent=2, sort_keys=True, default=str) + "\n"
        (self.path.parent / RUN_CONFIG_FILE).write_text(text, encoding="utf-8")

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps({"step": step, **values}, sort_keys=True, default=float) + "\n")


def read_metrics_log(path: str | os.PathLike) -> list[dict]:
    """The records of a [`JsonLinesTracker`] file (a truncated last line, from a killed run, is ignored)."""
    records = []
    path = Path(path)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def truncate_metrics_log(path: Path, last_step: int) -> None:
    """Drop records after `last_step` (logged by an interrupted run after its last checkpoint: they are redone)."""
    if path.is_file():
        kept = [record for record in read_metrics_log(path) if (record.get("step") or 0) <= last_step]
        path.write_text("".join(json.dumps(record, sort_keys=True) + "\n" for record in kept), encoding="utf-8")


def available_trackers() -> list[str]:
    """The trackers a run logs to besides its JSON-lines log by default: TensorBoard when it is installed."""
    try:
        import tensorboard  # noqa: F401 (optional: only whether it is installed)
    except ImportError:
        return []
    return ["tensorboard"]


def flat_config(values: dict) -> dict:
    """Scalars only (TensorBoard's hyperparameters accept nothing else): lists, dicts and `None` become strings."""
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value) for key, value in values.items()}


__all__ = [
    "LOGS_DIR",
    "METRICS_LOG",
    "RUN_CONFIG_FILE",
    "JsonLinesTracker",
    "available_trackers",
    "flat_config",
    "read_metrics_log",
    "truncate_metrics_log",
]
