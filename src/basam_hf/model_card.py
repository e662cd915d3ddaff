"""Model cards: rendered from the package's templates with `huggingface_hub`'s `ModelCard` / `ModelCardData` (YAML
metadata, `model-index` from evaluation results), for a BA-SAM model folder and for a peft LoRA adapter folder.
"""

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from .constants import BA_FIELDS, is_ba_parameter
from .metrics import LOWER_IS_BETTER
from .references import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    hub_id_or_none,
    is_adapter_folder,
    is_local_path,
)

# The one template (package data: installed code renders it); the repository's top-level `model_cards` is a link to
# this folder, so the template is never kept in two copies.
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_cards" / "basam_model_card.md"
MODEL_CARD_FILE = "README.md"
DEFAULT_LICENSE = "apache-2.0"
DEFAULT_TAGS = ("ba-sam", "sam", "segment-anything", "mask-generation", "image-segmentation", "vision")


def evaluation_results(summary: Mapping[str, Any], dataset_id: str | None = None) -> list:
    """`EvalResult`s (the card's `model-index`) for the BA-SAM rows of an evaluation summary
    ([`basam_hf.evaluation.evaluate`]): one per metric and input size."""
    source = str(summary.get("dataset"))
    # A local folder is named by its last component: its full path means nothing on the Hub.
    dataset_name = Path(source).name if is_local_path(source) else source
    dataset_type = dataset_id or dataset_name
    results = []
    for row in summary.get("results", []):
        if row.get("variant", "ba") != "ba":
            continue
        for metric in summary.get("metric_names", []):
            if metric not in row.get("metrics", {}):
                continue
            results.append(
                EvalResult(
                    task_type="mask-generation",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=summary.get("split"),
                    metric_type=metric,
                    metric_value=round(float(row["metrics"][metric]), 6),
                    metric_name=f"{metric} @ {row['size']} px, {summary.get('prompt')} prompt, "
                    f"{summary.get('protocol')} protocol",
                )
            )
    return results


def _evaluation_table(summary: Mapping[str, Any]) -> dict:
    """The template's view of an evaluation summary: a description line, metric headers and formatted rows."""
    names = list(summary.get("metric_names", []))
    rows = []
    for row in summary.get("results", []):
        counts = row.get("counts", {})
        values = [f"{row['metrics'][name]:.4f}" if name in row.get("metrics", {}) else "–" for name in names]
        rows.append(
            {
                "model": row.get("model", "BA-SAM"),
                "size": row.get("size"),
                "evaluated": counts.get("evaluated", ""),
                "skipped": counts.get("skipped", ""),
                "cells": values,
            }
        )
    split = f" (split `{summary['split']}`)" if summary.get("split") else ""
    source = str(summary.get("dataset"))
    dataset_name = Path(source).name if is_local_path(source) else source
    description = (
        f"On `{dataset_name}`{split}, prompt `{summary.get('prompt')}`, protocol "
        f"`{summary.get('protocol')}`, seed {summary.get('seed')}."
    )
    headers = [f"{name} {'↓' if name in LOWER_IS_BETTER else '↑'}" for name in names]
    return {"description": description, "metric_names": headers, "rows": rows}


def render_model_card(
    config: Any,
    *,
    model_name: str,
    repo_id: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    evaluation_dataset_id: str | None = None,
    license: str = DEFAULT_LICENSE,
    license_text: str | None = None,
    tags: Sequence[str] = DEFAULT_TAGS,
):
    """A `huggingface_hub.ModelCard` for a BA-SAM model, rendered from the package's template.

    Args:
        config: the model's `BaSamConfig` (or its dict).
        model_name: the card's title and the `model-index` name.
        repo_id: the repo id used in the loading example (default `model_name`).
        base_model, datasets: Hub ids for the metadata (local paths must not be passed; see [`hub_id_or_none`]).
        training: settings of the training run (shown as a table), or `None` for untrained / converted weights.
        evaluation: an evaluation summary ([`basam_hf.evaluation.evaluate`]); its BA-SAM rows become the
            `model-index` results and the evaluation table.
        evaluation_dataset_id: Hub id of the evaluation dataset for `model-index` (default: its name).
        license: SPDX-style license id for the metadata; `license_text` the card's license section.
    """
    config_dict = config if isinstance(config, Mapping) else config.to_dict()
    vision = dict(config_dict.get("vision_config", config_dict))
    vision.setdefault("pretrain_image_size", vision.get("image_size"))
    ba_settings = {name: vision[name] for name in BA_FIELDS if name in vision}
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="mask-generation",
        base_model=base_model,
        datasets=list(datasets) or None,
        tags=list(tags),
        license=license,
        model_name=model_name,
        eval_results=evaluation_results(evaluation, evaluation_dataset_id) if evaluation else None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id or model_name,
        base_model=base_model,
        ba_settings=ba_settings,
        vision=vision,
        training=dict(training) if training else None,
        evaluation=_evaluation_table(evaluation) if evaluation else None,
        license_text=license_text or default_license_text(license),
    )


def default_license_text(license: str) -> str:
    """The card's license section for a license id."""
    return f"`{license}`. Check that it is compatible with the licenses of the base model and of the training data."


def write_model_card(folder: str | os.PathLike, config_folder: str | os.PathLike | None = None, **card_kwargs) -> Path:
    """Render a card for the model saved in `folder` (its `config.json`, or that of `config_folder`) and save it as
    `folder/README.md`. `card_kwargs` go to [`render_model_card`]; `model_name` defaults to the folder name. A LoRA
    adapter folder gets its own card ([`write_adapter_card`])."""
    folder = Path(folder)
    if is_adapter_folder(folder):
        return write_adapter_card(folder, **card_kwargs)
    config = json.loads((Path(config_folder or folder) / "config.json").read_text(encoding="utf-8"))
    card_kwargs.setdefault("model_name", folder.resolve().name)
    card = render_model_card(config, **card_kwargs)
    path = folder / MODEL_CARD_FILE
    card.save(str(path))
    return path


# The repo id in the loading examples of the templates: `from_pretrained("ID"`, `model="ID"` and an adapter's
# `PeftModel.from_pretrained(model, "ID"` (its base is named by a variable, so it stays).
_LOADING_ID = re.compile(r'(from_pretrained\((?:model, )?|model=)"[^"]*"')


def retarget_model_card(path: str | os.PathLike, repo_id: str):
    """The card at `path` pointed at `repo_id` (title, `model-index` name, loading examples), or `None` when it needs
    no change. A card written by basam-hf for a local folder (e.g. by `finetune` without `push_to_hub`) names that
    folder, and pushed as it is it would tell Hub users to load a path on the trainer's disk. Cards without the
    `ba-sam` tag (written by hand) are left alone (`None`). Nothing is written: save the returned card."""
    card = ModelCard.load(path)
    if "ba-sam" not in (card.data.tags or []):
        return None
    old_name, name = card.data.model_name, repo_id.split("/")[-1]
    text = _LOADING_ID.sub(lambda match: f'{match.group(1)}"{repo_id}"', card.text)
    if old_name:
        text = text.replace(f"\n# {old_name}\n", f"\n# {name}\n", 1)
    if text == card.text and old_name == name:
        return None
    card.text, card.data.model_name = text, name
    return card


# ---------------------------------------------------------------------------------------------------------------------
# A LoRA adapter's card

ADAPTER_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_cards" / "basam_adapter_card.md"
ADAPTER_TAGS = ("ba-sam", "sam", "mask-generation", "peft", "lora")


def adapter_settings(adapter_config: Mapping[str, Any]) -> dict[str, Any]:
    """The card's adapter table from an `adapter_config.json`."""
    return {
        "rank": adapter_config.get("r"),
        "alpha": adapter_config.get("lora_alpha"),
        "dropout": adapter_config.get("lora_dropout"),
        "target modules": sorted(adapter_config.get("target_modules") or []),
        "trained whole": adapter_config.get("modules_to_save") or [],
    }


def write_adapter_card(
    folder: str | os.PathLike,
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    datasets: Sequence[str] = (),
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    evaluation_dataset_id: str | None = None,
    license: str | None = None,
    license_text: str | None = None,
    **ignored: Any,
) -> Path:
    """Render the adapter card of `folder` (its base model, how to load it with peft, the adapter's settings, the
    training run and evaluation) and save it as `folder/README.md`. Takes the arguments of
    [`write_model_card`]; the base model is the adapter's own reference."""
    folder = Path(folder)
    adapter_config = json.loads((folder / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
    base = adapter_config.get("base_model_name_or_path")
    with safe_open(str(folder / ADAPTER_WEIGHTS_FILE), framework="pt") as weights:
        names = list(weights.keys())
        count = sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    model_name = model_name or folder.resolve().name
    license = license or DEFAULT_LICENSE
    card_data = ModelCardData(
        library_name="peft",
        pipeline_tag="mask-generation",
        base_model=hub_id_or_none(base),
        datasets=list(datasets) or None,
        tags=list(ADAPTER_TAGS),
        license=license,
        model_name=model_name,
        eval_results=evaluation_results(evaluation, evaluation_dataset_id) if evaluation else None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(ADAPTER_CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id or model_name,
        base=base,
        base_is_local=is_local_path(base) or bool(base and Path(base).is_absolute()),
        adapter=adapter_settings(adapter_config),
        ba_parameters=sorted({name.split(".")[-1] for name in names if is_ba_parameter(name)}),
        parameters=f"{count:,}",
        megabytes=f"{(folder / ADAPTER_WEIGHTS_FILE).stat().st_size / 1e6:.1f}",
        training=dict(training) if training else None,
        evaluation=_evaluation_table(evaluation) if evaluation else None,
        license_text=license_text or default_license_text(license),
    )
    path = folder / MODEL_CARD_FILE
    card.save(str(path))
    return path


__all__ = [
    "ADAPTER_CARD_TEMPLATE",
    "ADAPTER_TAGS",
    "DEFAULT_LICENSE",
    "DEFAULT_TAGS",
    "MODEL_CARD_FILE",
    "MODEL_CARD_TEMPLATE",
    "adapter_settings",
    "default_license_text",
    "evaluation_results",
    "render_model_card",
    "retarget_model_card",
    "write_adapter_card",
    "write_model_card",
]
