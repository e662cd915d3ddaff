"""The commands that run or write one model: `info`, `segment`, `demo`, `convert-sam`, `convert-official`,
`merge-lora` and `push`."""

import argparse
import json
import sys
from pathlib import Path

from ..constants import (
    AUTOMATIC_PROMPTS_PER_BATCH,
    DEMO_MAX_FILE_SIZE,
    DEMO_MAX_PIXELS,
    MASK_GENERATION_THRESHOLDS,
    POINTS_PER_SIDE,
    SEGMENT_MAX_PIXELS,
)
from ..limits import open_image
from ..outputs import write_json_atomically
from ..references import choose_model, print_model_note
from ..settings import SIZE_ROUNDING, positive_int
from .common import (
    MODEL_FOLDER_OUTPUTS,
    SEGMENT_OUTPUTS,
    add_ba_options,
    add_model_arguments,
    add_overwrite_option,
    ba_settings_from_args,
    check_sizes,
    load_model_from_args,
    prepare_output_folder,
    writing_into,
)


def _info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig  # --help stays fast: no torch/transformers at parse time

    from ..configuration_basam import BaSamConfig

    settings = ba_settings_from_args(args)
    if args.model == "default":
        config = BaSamConfig(**settings)  # the package's default BA-SAM settings on SAM ViT-B dimensions
    else:
        config = AutoConfig.from_pretrained(args.model)  # basam (registered by basam_hf) or sam: no remote code
        if settings:  # as BaSamModel.from_pretrained(model, **settings) would run it
            config = BaSamConfig.from_dict({**config.to_dict(), "model_type": BaSamConfig.model_type}, **settings)
    vision = getattr(config, "vision_config", config)
    settings = vision.ba_settings() if hasattr(vision, "ba_settings") else {"bias_mode": "none (plain SAM)"}
    print(json.dumps({"model_type": config.model_type, "image_size": vision.image_size, **settings}, indent=2))
    return 0


def add_info_command(commands) -> None:
    """The `info` subcommand."""
    info = commands.add_parser(
        "info",
        help="print the BA-SAM settings of a model's config",
        description="Print the model type, input size and BA settings of a config; with BA options, the settings "
        "the model would run with under them.",
    )
    info.add_argument(
        "model", help="Hub repo id (OWNER/NAME), folder, or `default` (the package defaults, SAM ViT-B dimensions)"
    )
    add_ba_options(info)
    info.set_defaults(func=_info)


def _convert_sam(args: argparse.Namespace) -> int:
    folder = prepare_output_folder(args, MODEL_FOLDER_OUTPUTS, inputs=[args.source])
    from ..conversion import convert_sam_to_basam  # torch

    settings = ba_settings_from_args(args)
    with writing_into(folder, clear=True):
        model = convert_sam_to_basam(
            args.source, args.output, num_attention_heads=args.num_attention_heads, **settings
        )
    _print_converted(model, args.output)
    return 0


def _convert_official(args: argparse.Namespace) -> int:
    folder = prepare_output_folder(args, MODEL_FOLDER_OUTPUTS, inputs=[args.checkpoint])
    from ..conversion import convert_official_checkpoint  # torch

    with writing_into(folder, clear=True):
        model = convert_official_checkpoint(
            args.checkpoint,
            args.output,
            image_size=args.image_size,
            num_attention_heads=args.num_attention_heads,
            drop_rel_pos=args.drop_rel_pos,
            attention_scaling=args.attention_scaling,
        )
    _print_converted(model, args.output)
    return 0


def _print_converted(model, output: str) -> None:
    """One line naming what was written: the encoder's dimensions (inferred from the weights) and the BA settings."""
    vision = model.config.vision_config
    print(
        f"Saved BA-SAM to {output}: {vision.image_size} px, {vision.num_hidden_layers} layers, hidden size "
        f"{vision.hidden_size}, {vision.num_attention_heads} heads, global layers {vision.global_attn_indexes}, "
        f"{json.dumps(vision.ba_settings())}"
    )


def _push(args: argparse.Namespace) -> int:
    from ..hub import push_to_hub  # huggingface_hub imports slowly

    result = push_to_hub(
        args.folder, args.repo_id, private=args.private, commit_message=args.commit_message, dry_run=args.dry_run
    )
    verb = "Would upload" if result.dry_run else "Uploaded"
    print(f"{verb} {len(result.files)} files to {result.repo_id}:")
    card_note = " (generated model card)" if result.generated_card else ""
    card_note = f" (model card pointed at {result.repo_id})" if result.retargeted_card else card_note
    for name in result.files:
        print(f"  {name}{card_note if name == 'README.md' else ''}")
    if result.commit_url:
        print(result.commit_url)
    return 0


def add_push_command(commands) -> None:
    """The `push` subcommand (arguments of `basam_hf.hub.push_to_hub`)."""
    push = commands.add_parser(
        "push",
        help="upload a saved BA-SAM folder to the Hub",
        description="Upload weights, config, processor config, code files and model card. Refuses a folder that "
        "would not load for others (no auto_map in config.json, or missing code files).",
    )
    push.add_argument(
        "folder", help="a saved BA-SAM folder or LoRA adapter folder (e.g. a fine-tuning run's best/ or final/)"
    )
    push.add_argument("repo_id", help="Hub model repo, created if missing")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--commit-message", default="Upload BA-SAM model with basam-hf")
    push.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; send nothing")
    push.set_defaults(func=_push)


def _check_segment_arguments(args: argparse.Namespace) -> None:
    """The prompt combinations `segment` accepts: prompts, or --automatic alone."""
    prompts = [name for name in ("box", "point", "negative_point") if getattr(args, name)]
    if not prompts and not args.automatic:
        raise ValueError("give --box, --point or --automatic")
    if prompts and args.automatic:
        given = ", ".join("--" + name.replace("_", "-") for name in prompts)
        raise ValueError(f"--automatic prompts the model with a grid of points: it takes no {given} (drop one)")
    if not args.automatic:
        options = [
            name
            for name in ("points_per_side", "pred_iou_thresh", "stability_score_thresh")
            if getattr(args, name) is not None
        ]
        if options:
            given = ", ".join("--" + name.replace("_", "-") for name in options)
            raise ValueError(f"{given} set(s) --automatic mask generation: add --automatic, or drop it")


def _shown_iou(score: float) -> str:
    """A predicted IoU for the screen: within [0, 1], where an IoU lies (SAM's IoU head is a regression and can
    overshoot, e.g. 1.043); the raw value is kept in segment.json."""
    return f"{min(max(float(score), 0.0), 1.0):.3f}"


def _segment(args: argparse.Namespace) -> int:
    _check_segment_arguments(args)
    folder = prepare_output_folder(args, SEGMENT_OUTPUTS, inputs=[args.image])
    from ..loading import model_line  # torch, transformers
    from ..segment import check_prompts, generate_masks, mask_generation_kwargs, save_masks, segment_image

    image = open_image(args.image, args.max_pixels, hint="pass --max-pixels")
    boxes = points = labels = None
    if not args.automatic:
        points = list(args.point or []) + list(args.negative_point or [])
        labels = [1] * len(args.point or []) + [0] * len(args.negative_point or [])
        # Before loading the model: a prompt that cannot mean anything fails at once.
        boxes, points, notes = check_prompts(image.width, image.height, boxes=args.box, points=points or None)
        for note in notes:
            print(f"basam-hf segment: note: {note}", file=sys.stderr)
    choice = choose_model(args.model)  # after the input checks: without --model, it may download SAM ViT-B (once)
    if args.size is not None:
        prompts = AUTOMATIC_PROMPTS_PER_BATCH if args.automatic else max(1, len(args.box or []))
        check_sizes(choice.model, [args.size], "--size", prompts)
    print_model_note(args.command, choice)
    model, processor, _ = load_model_from_args(args, choice)
    line = model_line(choice.name, model.config.vision_config, [args.size] if args.size else None)
    print(line, flush=True)
    record = {"image": str(args.image), "model": line.removeprefix("Model: "), "size": args.size}
    if args.automatic:
        points_per_side = args.points_per_side or POINTS_PER_SIDE
        thresholds = mask_generation_kwargs(
            model, pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh
        )
        masks, scores = generate_masks(
            model, processor, image, size=args.size, points_per_side=points_per_side, **thresholds
        )
        record["automatic"] = {"points_per_side": points_per_side, **thresholds}
    else:
        masks, scores = segment_image(
            model, processor, image, boxes=boxes, points=points, labels=labels or None, size=args.size
        )
        record["prompts"] = {"boxes": boxes, "points": points, "labels": labels or None}
    with writing_into(folder, clear=True):
        paths = save_masks(masks, image, args.output, boxes=boxes, points=points, labels=labels)
        record["masks"] = [{"file": path.name, "predicted_iou": float(score)} for path, score in zip(paths, scores)]
        write_json_atomically(Path(args.output) / "segment.json", record)
    for path, score in zip(paths, scores):
        print(f"{path}  (predicted IoU {_shown_iou(score)})")
    if args.automatic:
        settings = record["automatic"]
        print(
            f"{len(masks)} mask(s) from a {points_per_side}x{points_per_side} grid of point prompts, kept at "
            f"pred_iou_thresh {settings['pred_iou_thresh']:g} and stability_score_thresh "
            f"{settings['stability_score_thresh']:g} (--points-per-side, --pred-iou-thresh, --stability-score-thresh)"
        )
    print(f"{paths[-1]}  ({len(masks)} mask(s) overlaid, prompts drawn); raw scores in segment.json")
    return 0


def add_segment_command(commands) -> None:
    """The `segment` subcommand (`basam_hf.segment`)."""
    segment = commands.add_parser(
        "segment",
        help="segment an image from box / point prompts or automatically; writes mask PNGs and an overlay",
        description="Prompts are in pixels of the original image. A box or point entirely outside the image, or a "
        "box with X2 <= X1 or Y2 <= Y1, is refused; a box reaching outside the image is clipped to it (with a note). "
        "Writes OUTPUT/mask_000.png, mask_001.png, ... (0/255), OUTPUT/overlay.png (masks and prompts) and "
        "OUTPUT/segment.json (prompts, settings, each mask's raw predicted IoU) into a new or empty folder; with "
        "--overwrite, an earlier segment run's files there are replaced and nothing else is touched.",
    )
    segment.add_argument("image", help="image file")
    add_model_arguments(segment, photo=True)
    segment.add_argument("--box", nargs=4, type=float, action="append", metavar=("X1", "Y1", "X2", "Y2"))
    segment.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"), help="object point")
    segment.add_argument("--negative-point", nargs=2, type=float, action="append", metavar=("X", "Y"))
    segment.add_argument(
        "--automatic", action="store_true", help="automatic mask generation (a grid of points; takes no prompts)"
    )
    segment.add_argument(
        "--points-per-side",
        type=positive_int,
        default=None,
        help=f"grid of --automatic: N x N point prompts (default: {POINTS_PER_SIDE})",
    )
    thresholds = "default: the model's recommended one (config `mask_generation`), else the pipeline's %s"
    segment.add_argument(
        "--pred-iou-thresh", type=float, help=thresholds % MASK_GENERATION_THRESHOLDS["pred_iou_thresh"]
    )
    segment.add_argument(
        "--stability-score-thresh",
        type=float,
        help=thresholds % MASK_GENERATION_THRESHOLDS["stability_score_thresh"],
    )
    segment.add_argument(
        "--size",
        type=positive_int,
        default=None,
        help=f"model input size (default: the model's); {SIZE_ROUNDING}. A size whose estimated memory exceeds "
        "this machine's is refused",
    )
    segment.add_argument(
        "--max-pixels",
        type=positive_int,
        default=SEGMENT_MAX_PIXELS,
        help="largest image read, in pixels (default: %(default)s; checked from the file header)",
    )
    segment.add_argument("--output", default="segment-output", help="output folder (default: %(default)s)")
    add_overwrite_option(segment)
    segment.set_defaults(func=_segment)


def _demo(args: argparse.Namespace) -> int:
    from ..app import run_demo_command  # numpy, PIL and gradio: only when the demo runs

    return run_demo_command(args, ba_settings=ba_settings_from_args(args))


def add_demo_command(commands) -> None:
    """The `demo` subcommand ([`basam_hf.app`], imported only when it runs: it needs numpy, PIL, gradio)."""
    demo = commands.add_parser(
        "demo",
        help="interactive demo in the browser (Gradio): click prompts, compare BA-SAM with BA off at any size",
        description="Start the demo page: upload an image or pick a sample, click points or draw a box, choose the "
        "input size and BA settings; shows BA-SAM's mask next to the BA-off mask with their scores and times, and "
        'offers the masks as PNG. Needs Gradio (pip install "basam-hf[demo]"); runs offline. The BA options set the '
        "model's own settings, which the page starts from.",
    )
    add_model_arguments(demo, photo=True)
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: the whole network)")
    demo.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    sizes = "multiples of the patch size (16 for SAM); others are refused"
    demo.add_argument("--size", type=int, default=None, help=f"initial input size (default: the model's); {sizes}")
    demo.add_argument("--min-size", type=int, default=None, help="smallest input size (default: half the model's)")
    demo.add_argument("--max-size", type=int, default=None, help="largest input size (default: twice the model's)")
    demo.add_argument("--max-pixels", type=int, default=DEMO_MAX_PIXELS, help="largest image accepted (pixels)")
    demo.add_argument("--max-file-size", default=DEMO_MAX_FILE_SIZE, help="largest upload (default: %(default)s)")
    demo.set_defaults(func=_demo)


def add_convert_commands(commands) -> None:
    """`convert-sam` and `convert-official`."""
    convert = commands.add_parser(
        "convert-sam",
        help="turn a SAM checkpoint into BA-SAM (safetensors + code files)",
        description="Load a SAM checkpoint into BaSamModel with the BA settings given (the package defaults "
        "otherwise; --bias-mode none --attention-scaling none is plain SAM) and save it with its processor and code "
        "files. The source is a transformers SAM checkpoint (Hub repo id or folder) or one of Meta's segment-anything "
        "files (sam_vit_b_01ec64.pth, ...), read with torch.load(weights_only=True) only, its dimensions, heads and "
        "global layers inferred from the weights.",
    )
    convert.add_argument(
        "source",
        help="SAM Hub repo id (e.g. facebook/sam-vit-base), folder, or segment-anything .pth / .safetensors file",
    )
    convert.add_argument("output", help="output folder (new or empty, unless --overwrite)")
    add_overwrite_option(convert)
    convert.add_argument(
        "--num-attention-heads",
        type=int,
        default=None,
        help="segment-anything files without rel-pos tables only (default: inferred from the weights)",
    )
    add_ba_options(convert)
    convert.set_defaults(func=_convert_sam)
    official = commands.add_parser(
        "convert-official",
        help="turn a checkpoint of the official BA-SAM code into a BA-SAM folder",
        description="Convert a checkpoint of the official BA-SAM code (.pth or .safetensors). A .pth is read with "
        "torch.load(weights_only=True) only: basam-hf never unpickles arbitrary code. Dimensions, global layers "
        "and the build size are inferred from the weights; every key must be used.",
    )
    official.add_argument("checkpoint", help="official BA-SAM checkpoint file")
    official.add_argument("output", help="output folder (new or empty, unless --overwrite)")
    add_overwrite_option(official)
    official.add_argument("--image-size", type=int, default=None, help="build input size (default: inferred)")
    official.add_argument("--attention-scaling", choices=("official", "log_length", "none"), default="official")
    official.add_argument("--num-attention-heads", type=int, default=None, help="default: inferred")
    official.add_argument(
        "--drop-rel-pos",
        action="store_true",
        help="drop the rel-pos tables as the official evaluation script does: the rel-pos bias is then zero and the "
        "coefficient has no effect",
    )
    official.set_defaults(func=_convert_official)


# ---------------------------------------------------------------------------------------------------------------------
# LoRA adapters (`merge-lora`; see basam_hf.lora)


def _merge_lora(args: argparse.Namespace) -> int:
    folder = prepare_output_folder(args, MODEL_FOLDER_OUTPUTS, inputs=[args.source])
    from ..lora import merge_adapter  # peft, torch

    with writing_into(folder, clear=True):
        merge_adapter(args.source, args.output, base=args.base)
    print(f"Merged {args.source} into its base; saved a BA-SAM model to {args.output}")
    return 0


def add_merge_lora_command(commands) -> None:
    """The `merge-lora` subcommand ([`basam_hf.lora.merge_adapter`])."""
    merge = commands.add_parser(
        "merge-lora",
        help="merge a LoRA adapter (finetune --train lora) into its base: a plain BA-SAM folder",
        description="Load the adapter's base model (base_model_name_or_path of adapter_config.json, or --base), "
        "apply the adapter and merge it (peft's merge_and_unload), and save the result with the base's processor, "
        "code files and a model card: a BA-SAM folder that loads without peft.",
    )
    merge.add_argument("source", metavar="ADAPTER", help="adapter folder (e.g. a run's final/) or Hub repo id")
    merge.add_argument("output", help="output folder (new or empty, unless --overwrite)")
    merge.add_argument("--base", default=None, help="base model (default: the one the adapter names)")
    add_overwrite_option(merge)
    merge.set_defaults(func=_merge_lora)
