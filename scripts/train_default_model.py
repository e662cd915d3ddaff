"""Train the embedded default BA-SAM model (issues 7 and 15): a small SAM-architecture model, from scratch (or from a
model, `--init-from`), on synthetic scenes and (`--data mixed`) photo composites.

What it does, all seeded:
1. builds a small `BaSamConfig` (defaults below: ViT 128 wide, 8 layers, 4 heads, windows of 4 tokens with global
   layers 3 and 7, 256 px input with 16 px patches = 16 x 16 tokens, neck / prompt encoder / mask decoder 64 wide,
   2 decoder layers; 1.96 M parameters at 256 px, 2.45 M at 1024 px, where the position embeddings cover 64 x 64
   tokens). It is trained as plain SAM (`bias_mode="none"`, `attention_scaling="none"`), like the SAM checkpoints
   BA-SAM is applied to zero-shot; the installed copy gets the package's default BA settings (`bias_mode="distance"`,
   `attention_scaling="log_length"`, `distance_unit="pretrain_grid"`, `pretrain_image_size` = its training size; at
   that size the log-length factor is 1, the distance bias does change attention, see
   `examples/resolution_study.py` for what each setting does at 1x to 4x). Initialisation: SAM's vision
   `initializer_range` (1e-10, meant for loading pretrained weights) is replaced by 0.02, and SAM's random Fourier
   matrix (`shared_image_embedding`, never trained) is redrawn with std 1 as in segment-anything (transformers draws
   it with std `hidden_size // 2` = 64 here: about 64 cycles per image on a 16 x 16 token grid, so the positional
   codes of nearby prompts and cells would be unrelated; an argument, not a measured ablation);
2. renders the synthetic train / validation / held-out test sets with `basam_hf.synthetic.save_synthetic_dataset`
   (dataset seeds 100 / 101 / 102: `synthetic.dataset_seeds` makes their sample seeds disjoint);
3. trains with the package's own loop, `basam_hf.training.finetune` (box prompts, Adam, StepLR, BCE + Dice; `best/`
   by validation IoU, `final/` at the end);
4. evaluates `best/` and `final/` on the held-out test set at the training size with `basam_hf.evaluation.evaluate`
   (standard protocol, box prompts by default) and writes `OUTPUT/test_results.json`;
5. with `--install-default`, saves the chosen model (`best/` by default) under the `--install-ba` settings into
   `src/basam_hf/default/` (what `resolve_model("default")` loads), evaluates it there and records the result in
   its `test_results.json`; first, `--iou-steps` steps per prompt kind train only its IoU-prediction head (the masks
   do not change; `calibrate_iou_head`).

The installed model comes from five runs on a 2-core machine: two at 256 px, then one each at 512, 768 and 1024 px,
each starting from the model before it rebased to the larger size (`--init-from` with `--image-size`;
`basam_hf.conversion.rebase_image_size`). Stage 1, from scratch with the defaults below:

    python scripts/train_default_model.py --output-dir runs/default-model --threads 2 \
        --install-default --install-dir runs/stage-1

- rendering 8,384 samples at 256 px: 383 s;
- training 8,000 steps of 8 images (8 epochs of the 8,000 training images): 73 min (the first 2,066 steps with
  `--threads 1` at 0.73 s per step while other jobs ran, the rest resumed with `--resume --threads 2` at 0.48 s per
  step including validation);
- validation box mIoU (128 scenes) by step: 250: 0.17, 500: 0.49, 1,000: 0.57, 2,000: 0.61, 3,000: 0.65,
  4,000: 0.69, 5,000: 0.70, 6,000: 0.73, 7,000: 0.74, 8,000: 0.75;
- held-out test (256 scenes, never seen): box mIoU 0.751.

Stage 2 continues that model on the same data with a decaying learning rate, 2.5e-4 (the rate stage 1 ended with)
halved every 1,000 steps:

    python scripts/train_default_model.py --output-dir runs/continue --data-dir runs/default-model/data \
        --threads 2 --init-from runs/stage-1 --learning-rate 2.5e-4 --lr-step-epochs 1 --epochs 3 \
        --install-default --install-dir runs/stage-2

- 3,000 steps in 17.5 min (0.35 s per step);
- validation box mIoU by step: 500: 0.751, 1,000: 0.759, 1,500: 0.765, 2,000: 0.769, 2,500: 0.771;
- held-out test: box mIoU 0.773; installed, 0.771 (the package's default model until stage 5, weights at commit
  b0ec110).

That model underfits rather than overfits (on 64 scenes each, stage 1 scored mIoU 0.766 on training scenes and 0.743
on held-out ones): its masks are blobs that miss concavities, spikes and occluder cut-outs. 16 x 16 tokens are too
coarse for more, and 8 px patches from scratch (32 x 32 tokens; ViT 64 wide, 2 heads, windows of 8 tokens) were
within 0.03 of the 16 px model at equal steps over 2,500 steps, at 2.3x the cost per step. The same weights,
evaluated zero-shot at larger sizes (the same scenes rendered with more pixels, so more tokens per object), do
better; each stage below fine-tunes at the next size, with fewer, costlier steps:

    python scripts/train_default_model.py --output-dir runs/stage-3-512 --data-dir runs/data-512 --threads 2 \
        --init-from runs/stage-2 --image-size 512 --train-samples 4000 --batch-size 4 --learning-rate 1.5e-4 \
        --lr-step-epochs 1 --epochs 4 --eval-steps 500 --save-steps 500
    python scripts/train_default_model.py --output-dir runs/stage-4-768 --data-dir runs/data-768 --threads 2 \
        --init-from runs/stage-3-512/best --image-size 768 --train-samples 2000 --batch-size 4 \
        --learning-rate 1e-4 --lr-step-epochs 1 --epochs 2 --eval-steps 250 --save-steps 250
    python scripts/train_default_model.py --output-dir runs/stage-5-1024 --data-dir runs/data-1024 --threads 2 \
        --init-from runs/stage-4-768/final --image-size 1024 --train-samples 800 --batch-size 4 \
        --learning-rate 5e-5 --lr-step-epochs 1 --epochs 1 --eval-steps 100 --save-steps 100 \
        --iou-steps 50 --install-default

- stage 3, 512 px (32 x 32 tokens): rendering 355 s; 4,000 steps of 4 images in 65 min (0.98 s per step);
  validation mIoU zero-shot 0.812, then by step 500: 0.821, 1,000: 0.819, 2,000: 0.828, 3,000: 0.833,
  4,000: 0.836; held-out test 0.829;
- stage 4, 768 px (48 x 48 tokens): rendering 360 s; 1,000 steps of 4 in 49 min (2.9 s per step); validation by
  step 250: 0.854, 500: 0.853, 750: 0.855, 1,000: 0.855; held-out test 0.846 (`best/`), 0.847 (`final/`);
- stage 5, 1024 px (64 x 64 tokens, SAM's grid): rendering 314 s; 200 steps of 4 in 38 min (11.3 s per step);
  validation zero-shot 0.863, then by step 100: 0.866, 200: 0.860; held-out test 0.853 (`best/`), 0.854 (`final/`);
  installed (`best/`, with the package's BA settings and the IoU head recalibrated): 0.816. At 64 x 64 tokens the
  distance bias, which this model never saw, costs 0.037 at the training size (at 16 x 16 tokens it cost 0.002);
- stage 6 tried to win that back by fine-tuning the stage-5 model with BA on (`--init-from runs/stage-5-1024/best
  --bias-mode distance --attention-scaling log_length --max-steps 60`, 17 s per step): validation 0.844 at step 30,
  0.849 at 60, held-out test 0.830 (step 60), so the stage-5 model was installed; more steps with BA might close
  the gap.

Issue 15 (a model for real photos and clicks, trained as shipped) starts a second recipe, in stages of at most about
two hours, each exported as a state (weights, config, processor, `trainer_state.json`, the stage's `metrics.jsonl`;
`--export-state`), so a later stage continues on any machine with `--init-from`. Stages 7 to 10 were committed under
`training/default-model/stage-N/`; issue 28 removed stages 7, 8 and 10 from the tree (superseded: stage 9 is the
installed default) and they remain in git history (`git checkout db98b14 -- training/default-model/stage-10`). A
future stage is stored as a tagged revision of a Hub model repo, not in git: `hf upload OWNER/REPO STATE_DIR .` then
`hf repos tag create OWNER/REPO stage-N`, and the next stage starts from `hf download OWNER/REPO --revision stage-N
--local-dir DIR` (docs/training-states.md):
- data (`--data mixed`, made when read, nothing stored): 16,000 photo composites (`basam_hf.composites`: objects cut
  from photos that ship inside scikit-image, scikit-learn and matplotlib, pasted on other photos, with grayscale, low
  contrast, blur, noise, JPEG and resolution losses; sources and licenses in `basam_hf.composites.PHOTOS`; validation
  and test use their own photos, never seen in training) and 8,000 synthetic scenes drawn at 512 px;
- prompts (`--prompt mixed`, `basam_hf.training.batch_prompt`): per batch a box (40 %, jittered), one click (35 %,
  three-mask output, best-mask loss) or 1-3 positive with 0-2 negative clicks (25 %); the IoU head is trained on
  every output;
- BA as shipped (`--ba-defaults`: the package's `BA_DEFAULTS`, `pretrain_image_size` 1024) at input sizes drawn per
  batch from 512, 512, 768, 1024; validation: boxes at 1024 px on 48 synthetic + 48 photo composites.

Stage 7 continues the installed 1024 px model:

    python scripts/train_default_model.py --output-dir runs/stage-7 --threads 1 --init-from default --ba-defaults \
        --data mixed --prompt mixed --train-sizes 512 512 768 1024 --train-samples 8000 --photo-samples 16000 \
        --synthetic-size 512 --val-samples 48 --test-samples 256 --batch-size 4 --learning-rate 2e-4 \
        --lr-step-epochs 1 --max-steps 3000 --eval-steps 150 --save-steps 50 --num-workers 1 \
        --test-prompts box point
    python scripts/train_default_model.py --output-dir runs/stage-7 \
        --export-state runs/stage-7/checkpoints/checkpoint-450 --state-dir training/default-model/stage-7

- stopped at step 450 of 3,000 (the session's budget): 3.5 s per step on an idle machine, 7-10 s while other jobs
  shared the 2 cores (`--threads 1`: with 2 threads and other jobs running, a step took 2-3x longer than with 1);
- training loss, mean per 75 steps: 1.25, 0.95, 0.79, 0.74, 0.77, 0.71;
- validation box mIoU (mixed set; the listed sizes, then 1024 px alone from stage 8 on): step 150: 0.604
  (1024 px: 0.615), 300: 0.601 (0.602), 450: 0.638 (0.653);
- stage 8 continues from that state with a new data order (`--seed 1`: the order of stage 7's epoch is not replayed):

    python scripts/train_default_model.py --output-dir runs/stage-8 --threads 2 \
        --init-from training/default-model/stage-7 --ba-defaults --data mixed --prompt mixed \
        --train-sizes 512 512 768 1024 --photo-samples 16000 --synthetic-size 512 --val-samples 48 \
        --batch-size 4 --learning-rate 2e-4 --lr-step-epochs 1 --max-steps 1500 --eval-steps 250 \
        --save-steps 50 --num-workers 1 --seed 1 --test-prompts box point
    python scripts/train_default_model.py --output-dir runs/stage-8 \
        --export-state runs/stage-8/checkpoints/checkpoint-750 --state-dir training/default-model/stage-8

- stopped at step 750 of 1,500 (the session's budget; most of its first hour went to the twins below): 3.2-5 s per
  step with 2 threads on an otherwise idle machine. Its first 36 steps ran twice (a second copy was started into the
  same folder and stopped); the committed log keeps steps 37-750 of the run whose checkpoints were exported;
- training loss, mean per 75 steps (from step 37): 0.68, 0.68, 0.67, 0.63, 0.65, 0.54, 0.64, 0.63, 0.58, 0.64;
- validation box mIoU at 1024 px (48 synthetic + 48 photo composites): step 250: 0.672, 500: 0.650, 750: 0.668;
- quick held-out check (24 scenes per set at 1024 px, seed 102, as for stage 7; ellipse baseline 0.668 on these
  photo composites, 0.636 on these synthetic scenes): photo composites box 0.531 (stage 7: 0.462), single click
  0.405 (0.333); synthetic scenes box 0.807 (0.801), single click 0.688 (0.667). Boxes on photos are still below the
  image-blind baseline;
- stage 9 was planned as the stage-8 command from `training/default-model/stage-8`; the twins below changed the plan.

Stage 9 trains at 256-512 px instead (the twins, trained at 256 px only, lost nothing at 1024 px, and a step at 256
px costs a tenth of one at 1024 px), on a training set cached once at 512 px (4,000 synthetic scenes and 10,000
photo composites of the training photos; `--cache-train --cache-size 512`, written by 2 processes in 25 min), batches
of 8, the learning rate halved every epoch (1,750 steps):

    python scripts/train_default_model.py --output-dir runs/stage-9 --data-dir runs/data-mixed --threads 2 \
        --init-from training/default-model/stage-8 --ba-defaults --data mixed --cache-train --cache-size 512 \
        --cache-workers 2 --train-samples 4000 --photo-samples 10000 --synthetic-size 512 --prompt mixed \
        --train-sizes 256 384 512 --val-samples 48 --batch-size 8 --learning-rate 3e-4 --lr-step-epochs 1 \
        --max-steps 4000 --eval-steps 500 --save-steps 100 --num-workers 1 --seed 3 --test-prompts box point
    python scripts/train_default_model.py --output-dir runs/stage-9 \
        --export-state runs/stage-9/checkpoints/checkpoint-3000 --state-dir training/default-model/stage-9

- stopped at step 3,000 of 4,000 (the session's budget), 86 min: 1.1-1.6 s per step (2 threads; up to 2 s while an
  assessment ran beside it);
- training loss, mean per 300 steps: 0.641, 0.591, 0.549, 0.541, 0.556, 0.514, 0.485, 0.490, 0.480, 0.464;
- validation box mIoU at 1024 px (48 synthetic + 48 photo composites, as stage 8; stage 8 ended at 0.668): step
  500: 0.657, 1,000: 0.682, 1,500: 0.687, 2,000: 0.706, 2,500: 0.703, 3,000: 0.714;
- held-out, 128 samples per set at 1024 px (`scripts/assess_default_model.py --model training/default-model/stage-9
  --output runs/assess-stage-9 --threads 2 --scenes 6`; its prompt part is committed as the stage's
  `acceptance-partial.json`): synthetic scenes box 0.769 [0.733, 0.801], click 0.688 (ellipse 0.621); test-photo
  composites box 0.589 [0.543, 0.634], click 0.476 (ellipse 0.627: boxes on photos still do not beat it);
  predicted vs actual IoU, Pearson 0.68;
- continued with the same command plus `--resume --max-steps 6000` from step 3,000 at 7.5e-5 (the second epoch's
  rate), stopped at step 4,034: training loss per 300 steps 0.460, 0.455, 0.460; validation box mIoU at 1024 px
  3,500: 0.705, 4,000: 0.699. A plateau: the step-3,000 state stays stage 9's, and a later stage should change the
  recipe (data, model size, loss), not the length.

The trained twins of `examples/resolution_study.py` (issue 17) differ only in BA while training. Both continue the
previous embedded model (256 px, 16 x 16 tokens, trained as plain SAM on synthetic scenes with boxes; commit
b0ec110) for 1,500 steps of 8 at 256 px only, on the same cached mixed training set (2,000 synthetic scenes and 4,000
photo composites written once at 256 px, `--cache-train`), with mixed prompts, the same seed and schedule; one with
the package's default BA settings (`--ba-defaults`), one as plain SAM:

    mkdir -p runs/twins/init-256 && for f in config.json model.safetensors processor_config.json; do
        git show b0ec110:src/basam_hf/default/$f > runs/twins/init-256/$f; done
    TWIN="--data-dir runs/twins/data --init-from runs/twins/init-256 --image-size 256 --data mixed --cache-train \
        --train-samples 2000 --photo-samples 4000 --synthetic-size 256 --val-samples 48 --test-samples 64 \
        --prompt mixed --batch-size 8 --learning-rate 5e-4 --lr-step-epochs 1 --max-steps 1500 --eval-steps 500 \
        --save-steps 100 --seed 0 --threads 1 --test-prompts box point"
    python scripts/train_default_model.py --output-dir runs/twins/ba --ba-defaults $TWIN
    python scripts/train_default_model.py --output-dir runs/twins/off $TWIN
    # committed as training/twins/{ba,off}: the final models (step 1,500)
    for twin in ba off; do python scripts/train_default_model.py --output-dir runs/twins/$twin \
        --export-state runs/twins/$twin/checkpoints/checkpoint-1500 --state-dir training/twins/$twin; done

- 1,017 s each (0.68 s per step), the two runs side by side on the 2 cores, one thread each;
- training loss, mean per 300 steps: BA twin 0.839, 0.680, 0.586, 0.564, 0.532; plain twin 0.839, 0.681, 0.587,
  0.566, 0.530;
- validation box mIoU at 256 px (48 synthetic + 48 photo composites), steps 500 / 1,000 / 1,500: BA twin 0.594,
  0.633, 0.635; plain twin 0.598, 0.628, 0.634;
- held-out test at 256 px (64 scenes per set): synthetic box 0.691 (BA twin) / 0.688 (plain twin), click 0.600 /
  0.606; photo composites box 0.476 / 0.461, click 0.418 / 0.412 (`examples/resolution_study.py` measures them at
  1x to 4x, with intervals);
- tried first: the same twins from a fresh initialisation (`--learning-rate 1e-3`, no `--init-from`) still
  predicted empty masks at step 500 (validation IoU 0.00 for both) with the mixed prompts and photo composites, where
  box-only training on synthetic scenes had reached 0.49; at the session's budget the twins start from a trained
  model instead, the same one for both.

Stage 10 adds depth (the stage-9 plateau and a check on new composites of the training photos, box 0.642 vs
ellipse 0.585 at 1024 px, say the model underfits): `--insert-layers-after 0 1 2 3 4 5 6 7` puts an
identity-initialised windowed layer after each of stage 9's (`basam_hf.conversion.deepen_encoder`; 16 layers, global
6 and 14, 4.06 M parameters; windowed layers are cheap: encoder at 1024 px 0.76 s vs 0.66 s for 8 layers, random
weights, same run), then the stage-9 command with `--learning-rate 2e-4 --max-steps 5250 --seed 4`:

    python scripts/train_default_model.py --output-dir runs/stage-10 --data-dir runs/data-mixed --threads 2 \
        --init-from training/default-model/stage-9 --insert-layers-after 0 1 2 3 4 5 6 7 --ba-defaults --data mixed \
        --cache-train --cache-size 512 --cache-workers 2 --train-samples 4000 --photo-samples 10000 \
        --synthetic-size 512 --prompt mixed --train-sizes 256 384 512 --val-samples 48 --batch-size 8 \
        --learning-rate 2e-4 --lr-step-epochs 1 --max-steps 5250 --eval-steps 500 --save-steps 100 --num-workers 1 \
        --seed 4 --test-prompts box point
    python scripts/train_default_model.py --output-dir runs/stage-10 \
        --export-state runs/stage-10/checkpoints/checkpoint-2000 --state-dir training/default-model/stage-10

- stopped at step 2,080 (session budget), 2.1 s per step; state committed at step 2,000 (the new layers' draws were
  not seeded in this run; the script now seeds them with --seed);
- training loss, mean per 300 steps: 0.478, 0.489, 0.454, 0.462, 0.457, 0.441, 0.432;
- validation box mIoU at 1024 px: step 500: 0.695, 1,000: 0.719, 1,500: 0.704, 2,000: 0.714 (stage 9 ended at
  0.714): no clear gain yet on 96 validation samples; not installed (held-out assessment below);
- continued in a later session with the same command plus `--resume` from `checkpoint-2000` (Adam state kept, lr
  1e-4), 2.2 to 2.4 s per step, stopped at step 2,839 (session end; that machine's `runs/` did not carry over, so the
  committed state stays at step 2,000): validation box mIoU at 1024 px 2,500: 0.714. Over stages 9 and 10 (3,000 +
  1,034 + 2,839 steps, 8 to 16 layers) validation has stayed within 0.70 to 0.72;
- held-out, the committed step-2,000 state against the installed stage-9 model on the same 128 samples per set at
  1024 px (`scripts/assess_default_model.py --model training/default-model/stage-10 --output runs/assess-stage-10
  --threads 2 --scenes 6 --compare src/basam_hf/default/acceptance.json`, 552 s; committed as the stage's
  `acceptance.json`): synthetic box 0.786, click 0.711; test-photo box 0.597 (ellipse 0.627), click 0.498; IoU
  correlation 0.70; 15.5 MB. Paired differences, stage 10 minus stage 9: synthetic box +0.017 [-0.001, +0.036],
  click +0.022 [0.000, +0.044]; photo box +0.008 [-0.012, +0.027], click +0.022 [+0.002, +0.043]. Small, and the
  photo-box interval spans 0 (the bar set before the run for installing: both photo intervals above 0), for 1.65 x
  the weights: stage 9 stays installed.

Where this stands (issue 15): the installed stage-9 model meets the size, speed, IoU-correlation and trained-with-BA
bars and misses the accuracy ones (`src/basam_hf/default/acceptance.json`; test-photo box 0.589 against 0.85 asked,
click 0.476 against 0.70, the ellipse baseline 0.627 above the boxes on photos). Longer runs and a deeper encoder
have each added at most 0.02 since stage 9, and the model underfits composites of its own ten training photos, so
more CPU steps of this recipe are not the way on. What would be: a pretrained SAM to start from or distil (none is
reachable offline: `pip download segment-anything-py` brings code only, and `mobile-sam`, `mobile_sam`,
`nanosam`, `edge-sam`, `efficientvit-sam` and `sam-weights` find no distribution on the package index), many more source photos than the ten that ship inside
installed packages, and accelerator time for a wider encoder.

The installed model is stage 9's state (step 3,000), trained with the package's BA settings as it ships. Its
automatic-mask thresholds were chosen on 8 composites of the validation photos (`assess_default_model.py
--sweep-thresholds`: the pair with the highest recall of objects at IoU >= 0.5; pipeline defaults 0.88 / 0.95: recall
0.000, 0.4 masks per image; 0.8 / 0.92: 0.083; 0.7 / 0.88: 0.167; 0.6 / 0.85: 0.292, 4.6 masks; 0.5 / 0.8: 0.417,
12.4 masks; 0.4 / 0.7: 0.625, 36.6 masks), then it was installed and assessed on the test photos:

    python scripts/assess_default_model.py --model training/default-model/stage-9 --output runs/sweep-stage-9 \
        --sweep-thresholds --scenes 8 --threads 2
    python scripts/train_default_model.py --output-dir runs/install-stage-9 --install training/default-model/stage-9 \
        --install-mask-generation pred_iou_thresh=0.4 stability_score_thresh=0.7
    python scripts/assess_default_model.py --output runs/assess-default --threads 1 --scenes 16 \
        --compare training/default-model/previous-default-acceptance.json  # the previous default
    cp runs/assess-default/acceptance.json src/basam_hf/default/

Earlier default models were installed from a run with `--install-default` (with the package's BA settings,
`--install-ba`; re-evaluated after installation), e.g. the one of stages 1-5:

    python scripts/train_default_model.py --output-dir runs/stage-5-1024 --data-dir runs/data-1024 --skip-training \
        --install-default --iou-steps 50
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from basam_hf.configuration_basam import BA_DEFAULTS  # the package's default BA settings, for the installed model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / "src" / "basam_hf" / "default"
STATE_DIR = REPO / "training" / "default-model"  # committed stage states: what the next stage continues from

TRAIN_SEED, VAL_SEED, TEST_SEED = 100, 101, 102  # dataset seeds: disjoint sample seeds (synthetic.dataset_seeds)
DATA_META = "data.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="run folder (data/, best/, final/, ...)")
    parser.add_argument("--data-dir", type=Path, help="synthetic datasets (default OUTPUT/data; reused if they match)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and training seed")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    # Architecture.
    parser.add_argument(
        "--image-size",
        type=int,
        help="input size to train at (default 256; with --init-from, the model's own, and another size rebases the "
        "model to it: basam_hf.conversion.rebase_image_size)",
    )
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--window-size", type=int, default=4)
    parser.add_argument("--global-layers", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--output-channels", type=int, default=64, help="neck, prompt encoder and mask decoder width")
    parser.add_argument(
        "--init-from",
        help="start from this model (folder, repo id or `default`), with BA as --bias-mode / --attention-scaling say "
        "(default off), instead of a fresh initialisation; the architecture arguments other than --image-size are "
        "then ignored",
    )
    parser.add_argument(
        "--insert-layers-after",
        type=int,
        nargs="+",
        metavar="LAYER",
        help="with --init-from: a new windowed encoder layer, starting as the identity, after each of these layers "
        "(basam_hf.conversion.deepen_encoder)",
    )
    parser.add_argument("--bias-mode", default="none", help="BA while training (none: plain SAM)")
    parser.add_argument("--attention-scaling", default="none")
    parser.add_argument(
        "--ba-defaults",
        action="store_true",
        help="train with the package's default BA settings (as shipped; wins over --bias-mode / --attention-scaling)",
    )
    # Data.
    parser.add_argument(
        "--data",
        choices=["synthetic", "mixed"],
        default="synthetic",
        help="synthetic: rendered scenes saved under --data-dir; mixed: photo composites (basam_hf.composites) and "
        "synthetic scenes, both made when read",
    )
    parser.add_argument("--train-samples", type=int, default=8000, help="synthetic training scenes")
    parser.add_argument("--photo-samples", type=int, default=16000, help="training composites (--data mixed)")
    parser.add_argument(
        "--synthetic-size", type=int, default=512, help="size synthetic training scenes are drawn at (--data mixed)"
    )
    parser.add_argument(
        "--cache-train",
        action="store_true",
        help="--data mixed: write the training set once, shrunk to --cache-size, as an image folder under --data-dir "
        "(reused by later runs: the twins of examples/resolution_study.py share one)",
    )
    parser.add_argument("--cache-size", type=int, help="longest side of cached samples (default: --image-size)")
    parser.add_argument("--cache-workers", type=int, default=0, help="processes writing the cache (0: this one)")
    parser.add_argument("--val-samples", type=int, default=128, help="validation samples (per source with mixed)")
    parser.add_argument("--test-samples", type=int, default=256, help="held-out samples (per source with mixed)")
    # Training (basam_hf.training.finetune).
    parser.add_argument("--prompt", default="box", help="training prompt: box | point | click | points:k | mixed")
    parser.add_argument("--train-sizes", type=int, nargs="+", help="input sizes, one drawn per batch (default: 1)")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lr-step-epochs", type=int, default=3)
    parser.add_argument("--lr-gamma", type=float, default=0.5)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-steps", type=int, help="optimizer steps (wins over --epochs)")
    parser.add_argument("--eval-steps", type=int, default=250)
    parser.add_argument("--save-steps", type=int, default=500)
    parser.add_argument("--resume", action="store_true", help="continue the run in OUTPUT from its last checkpoint")
    parser.add_argument(
        "--export-state",
        type=Path,
        metavar="CHECKPOINT",
        help="only save a checkpoint's model (with its trainer state and the run's metrics log) as a model folder in "
        "--state-dir, for a later stage's --init-from (a stage's committed state), then exit",
    )
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help="see --export-state (default: %(default)s)")
    parser.add_argument(
        "--install",
        type=Path,
        metavar="FOLDER",
        help="only install the model in FOLDER (e.g. a committed stage state) into --install-dir with the --install-ba "
        "settings, then exit (scripts/assess_default_model.py records its numbers)",
    )
    # Test and installation.
    parser.add_argument("--test-prompts", nargs="+", default=["box"], help="prompts of the held-out evaluation")
    parser.add_argument("--skip-training", action="store_true", help="only evaluate / install an existing run")
    parser.add_argument("--install-default", action="store_true", help=f"copy the chosen model into {DEFAULT_DIR}")
    parser.add_argument("--install-from", choices=["best", "final"], default="best")
    parser.add_argument(
        "--iou-steps", type=int, default=200, help="steps per prompt kind training only the IoU head before installing"
    )
    parser.add_argument(
        "--install-dir", type=Path, default=DEFAULT_DIR, help="where to install (default: %(default)s)"
    )
    parser.add_argument(
        "--install-ba",
        nargs="*",
        default=[f"{key}={value}" for key, value in BA_DEFAULTS.items()],
        metavar="FIELD=VALUE",
        help="BA settings written into the installed config (default: %(default)s)",
    )
    parser.add_argument(
        "--install-mask-generation",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="automatic-mask thresholds the installed config recommends (`mask_generation`, e.g. pred_iou_thresh=0.6; "
        "choose them with scripts/assess_default_model.py --sweep-thresholds on validation scenes)",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace):
    from basam_hf import BaSamConfig

    channels = args.output_channels
    return BaSamConfig(
        vision_config={
            "hidden_size": args.hidden_size,
            "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads,
            "mlp_dim": 4 * args.hidden_size,
            "image_size": args.image_size,
            "patch_size": args.patch_size,
            "window_size": args.window_size,
            "global_attn_indexes": list(args.global_layers),
            "output_channels": channels,
            "num_pos_feats": channels // 2,
            "initializer_range": 0.02,  # SAM's 1e-10 assumes pretrained weights are loaded over it
            "bias_mode": args.bias_mode,
            "attention_scaling": args.attention_scaling,
            "pretrain_image_size": args.image_size,
        },
        prompt_encoder_config={"hidden_size": channels, "image_size": args.image_size, "patch_size": args.patch_size},
        mask_decoder_config={
            "hidden_size": channels,
            "mlp_dim": 4 * channels,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "iou_head_hidden_dim": channels,
        },
    )


def init_model(config, seed: int):
    """A freshly initialised `BaSamModel` (seeded), with SAM's Fourier matrix drawn as in segment-anything."""
    import torch

    from basam_hf import BaSamModel

    torch.manual_seed(seed)
    model = BaSamModel(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        embedding = model.shared_image_embedding.positional_embedding
        embedding.copy_(torch.randn(embedding.shape, generator=generator))  # PositionEmbeddingRandom(scale=1.0)
    return model


def saved_image_size(folder: Path) -> int | None:
    """The input size of the model saved in `folder` (an earlier run's, for `--skip-training`), if there is one."""
    config = folder / "config.json"
    return json.loads(config.read_text())["vision_config"]["image_size"] if config.is_file() else None


def make_mixed_data(args: argparse.Namespace) -> dict[str, dict]:
    """`--data mixed`: {"train": {"mixed": ...}, "val": {...}, "test": {"synthetic": ..., "photo": ...}}, datasets made
    when read. Synthetic scenes use the seeds of `make_data`; composites use the photos of their own split (held out
    by source photo: no test photo appears in training or validation)."""
    from basam_hf.composites import composite_segmentation_dataset
    from basam_hf.data import concatenate_segmentation_datasets
    from basam_hf.synthetic import synthetic_segmentation_dataset

    def both(split: str, seed: int, count: int, photo_count: int, size: int) -> dict:
        return {
            "synthetic": synthetic_segmentation_dataset(count, size, seed=seed),
            "photo": composite_segmentation_dataset(photo_count, split, seed=seed),
        }

    train = both("train", TRAIN_SEED, args.train_samples, args.photo_samples, args.synthetic_size)
    return {
        "train": {"mixed": concatenate_segmentation_datasets(train["synthetic"], train["photo"])},
        "val": {
            "mixed": concatenate_segmentation_datasets(
                *both("val", VAL_SEED, args.val_samples, args.val_samples, args.image_size).values()
            )
        },
        "test": both("test", TEST_SEED, args.test_samples, args.test_samples, args.image_size),
    }


def cached_train_set(train_set, args: argparse.Namespace):
    """`--cache-train`: the mixed training set written once (resumable) as an image folder of samples shrunk to the
    training size, named after what it holds so that runs with other data settings do not share it."""
    from basam_hf.data import load_segmentation_dataset, write_image_folder

    size = args.cache_size or args.image_size
    name = f"mixed-train-{args.train_samples}-{args.photo_samples}-{args.synthetic_size}px-max{size}"
    folder = (args.data_dir or args.output_dir / "data") / name
    if not (folder / "complete").is_file():
        write_image_folder(train_set, folder, max_side=size, num_workers=args.cache_workers)
        (folder / "complete").write_text(f"{len(train_set)} samples\n")
    # Listed by name, not in the generated order: the seeded sampler draws the training order either way.
    return load_segmentation_dataset(str(folder))


def make_data(data_dir: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Render (or reuse, when `data.json` matches) the train / val / test sets; returns their folders."""
    from basam_hf.synthetic import save_synthetic_dataset

    wanted = {
        "size": args.image_size,
        "train": [TRAIN_SEED, args.train_samples],
        "val": [VAL_SEED, args.val_samples],
        "test": [TEST_SEED, args.test_samples],
    }
    meta_path = data_dir / DATA_META
    paths = {name: data_dir / name for name in ("train", "val", "test")}
    if meta_path.is_file() and json.loads(meta_path.read_text())["sets"] == wanted:
        print(f"Reusing the synthetic data in {data_dir}.", flush=True)
        return paths
    start = time.perf_counter()
    for name, path in paths.items():
        shutil.rmtree(path, ignore_errors=True)
        seed, count = wanted[name]
        save_synthetic_dataset(path, count, args.image_size, seed=seed)
    seconds = time.perf_counter() - start
    meta_path.write_text(json.dumps({"sets": wanted, "render_seconds": round(seconds, 1)}, indent=2) + "\n")
    print(f"Rendered {sum(c for _, c in list(wanted.values())[1:])} samples in {seconds:.0f} s.", flush=True)
    return paths


def test_model(folder: Path, tests: dict, args: argparse.Namespace) -> dict:
    """Held-out mIoU (and the other standard metrics) of a saved model at the training size, per test set (a
    dataset path, or a dataset) and prompt: `{set: {prompt: row}}`, or `{prompt: row}` for the one synthetic set."""
    from basam_hf.evaluation import evaluate

    results = {}
    for name, test_set in tests.items():
        results[name] = {}
        for prompt in args.test_prompts:
            start = time.perf_counter()
            # evaluate() resumes from the records in its output folder, keyed by the model's path, not its weights: a
            # retrained best/ would get the old model's numbers, so every evaluation starts from an empty folder.
            output = args.output_dir / "test-eval" / folder.name / name / prompt.replace(":", "-")
            shutil.rmtree(output, ignore_errors=True)
            summary = evaluate(
                str(folder),
                str(test_set) if isinstance(test_set, Path) else test_set,
                sizes=[args.image_size],
                prompt=prompt,
                seed=TEST_SEED,
                output_dir=output,
            )
            row = summary["results"][0]
            results[name][prompt] = {
                "size": row["size"],
                "metrics": row["metrics"],
                "counts": row["counts"],
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(
                f"{folder.name} @ {args.image_size} px, {name}, {prompt}: mIoU {row['metrics']['iou']:.4f}", flush=True
            )
    return results if args.data == "mixed" else results["synthetic"]


def training_ba(args: argparse.Namespace) -> dict:
    """The BA settings to train with: the package's defaults with `--ba-defaults`, else the two options."""
    if args.ba_defaults:
        return dict(BA_DEFAULTS)
    return {"bias_mode": args.bias_mode, "attention_scaling": args.attention_scaling}


def parse_ba(pairs: list[str]) -> dict:
    """`["bias_mode=distance", "bias_slope_scale=0.5"]` -> `{"bias_mode": "distance", "bias_slope_scale": 0.5}`."""
    settings = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        settings[key] = json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
    return settings


def calibrate_iou_head(folder: Path, train_path: Path, args: argparse.Namespace) -> Path:
    """Train only the IoU-prediction head of `folder`'s model (its masks stay bit-identical), so that its scores mean
    something: box prompts (the single-mask output), then single clicks (the three-mask outputs). Returns the final
    folder. The training loss of step 3 includes the IoU term, but this recalibrates a model trained without it."""
    from basam_hf.training import finetune

    for prompt in ("box", "point"):
        run = args.output_dir / f"iou-head-{prompt}"
        folder = finetune(
            str(folder),
            train_path,
            output_dir=run,
            train="iou-head",
            prompt=prompt,
            learning_rate=1e-3,
            batch_size=args.batch_size,
            epochs=1,
            max_steps=args.iou_steps,
            save_steps=args.iou_steps,
            keep_last=1,
            seed=args.seed,
            resume=True,
            log_with=[],
        ).final_dir
    return Path(folder)


def link_package_code(target: Path) -> None:
    """Inside the package, replace the code files saved for `trust_remote_code` by relative links to the package's
    own modules: the source tree keeps one copy of its code (building a wheel stores the linked files' contents)."""
    package = DEFAULT_DIR.parent
    if target.resolve().parent != package.resolve():
        return
    for code in sorted(target.glob("*.py")):
        module = package / code.name
        if module.is_file() and code.read_bytes() == module.read_bytes():
            code.unlink()
            code.symlink_to(Path("..") / code.name)


def install_default(folder: Path, target: Path, ba_settings: dict, mask_generation: dict | None = None) -> None:
    """Replace the model in `target` with `folder`'s weights and processor, under `ba_settings` and with the
    recommended automatic-mask thresholds `mask_generation` (`BaSamConfig.mask_generation`; `None` keeps the
    folder's), saved with the code files, so it loads like any BA-SAM folder."""
    from basam_hf import save_pretrained_with_processor
    from basam_hf.configuration_basam import check_mask_generation
    from basam_hf.loading import load_model_and_processor

    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder} is not a saved model folder.")
    model, processor, _ = load_model_and_processor(folder, ba_settings=ba_settings)
    if mask_generation:
        check_mask_generation(mask_generation)
        model.config.mask_generation = mask_generation
    shutil.rmtree(target, ignore_errors=True)
    save_pretrained_with_processor(model, str(target), processor=processor)
    link_package_code(target)
    print(f"Installed {folder} into {target} with {ba_settings}, mask generation {mask_generation}.", flush=True)


def export_state(checkpoint: Path, target: Path) -> None:
    """A training checkpoint's model as a model folder (safetensors, config, processor) plus `trainer_state.json` and
    the run's `metrics.jsonl` up to that step: what a later stage, perhaps on another machine, continues from with
    `--init-from`. The optimizer state (twice the weights, a pickle) is left out: a stage restarts Adam."""
    from safetensors.torch import load_file

    from basam_hf import BaSamModel, save_pretrained_with_processor
    from basam_hf.loading import load_processor
    from basam_hf.training import BEST_DIR, LOGS_DIR, METRICS_LOG

    run = checkpoint.parents[1]
    # The checkpoint keeps the weights; the run's best/ (exported at the first validation) the config and processor.
    model = BaSamModel.from_pretrained(run / BEST_DIR)
    missing, unexpected = model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
    # safetensors stores SAM's shared Fourier matrix once (the prompt encoder's copy is the same tensor).
    if unexpected or any(not name.startswith("prompt_encoder.shared_embedding.") for name in missing):
        raise SystemExit(f"{checkpoint} does not match {run / BEST_DIR}: missing {missing}, unexpected {unexpected}")
    processor = load_processor(str(run / BEST_DIR), model)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    shutil.rmtree(target, ignore_errors=True)
    save_pretrained_with_processor(model, str(target), processor=processor)
    for code in target.glob("*.py"):  # copies of the package's modules, for remote code: the package loads it
        code.unlink()
    shutil.copy(checkpoint / "trainer_state.json", target / "trainer_state.json")
    log = run / LOGS_DIR / METRICS_LOG
    if log.is_file():
        lines = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= state["global_step"]]
        (target / METRICS_LOG).write_text("\n".join(lines) + "\n")
    print(f"Saved step {state['global_step']} of {run} to {target}.", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export_state:
        export_state(args.export_state, args.state_dir)
        return 0
    if args.install:
        install_default(
            args.install, args.install_dir, parse_ba(args.install_ba), parse_ba(args.install_mask_generation)
        )
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    model = None
    if args.init_from and not args.skip_training:
        from basam_hf.conversion import deepen_encoder, rebase_image_size
        from basam_hf.loading import load_model_and_processor

        # Trained with BA as asked (by default off: plain SAM, like a fresh model), whatever the saved model had.
        model = load_model_and_processor(args.init_from, ba_settings=training_ba(args)).model
        args.image_size = args.image_size or model.config.vision_config.image_size
        if args.image_size != model.config.vision_config.image_size:
            model = rebase_image_size(model, args.image_size)
        if args.insert_layers_after:
            torch.manual_seed(args.seed)  # the new layers' weights
            model = deepen_encoder(model, args.insert_layers_after)
    args.image_size = args.image_size or saved_image_size(args.output_dir / args.install_from) or 256
    if args.data == "mixed":
        data = make_mixed_data(args)
        train_set, val_set, tests = data["train"]["mixed"], data["val"]["mixed"], data["test"]
        if args.cache_train:
            train_set = cached_train_set(train_set, args)
    else:
        paths = make_data(args.data_dir or args.output_dir / "data", args)
        train_set, val_set, tests = str(paths["train"]), str(paths["val"]), {"synthetic": paths["test"]}
    timings = {}

    if not args.skip_training:
        from basam_hf.training import finetune

        if model is None:
            model = init_model(build_config(args), args.seed)
            if args.ba_defaults:
                from basam_hf.loading import ba_variant

                model = ba_variant(model, **training_ba(args))
        parameters = sum(p.numel() for p in model.parameters())
        print(f"{parameters / 1e6:.2f} M parameters ({parameters * 4 / 2**20:.1f} MB in float32).", flush=True)
        start = time.perf_counter()
        result = finetune(
            model,
            train_set,
            output_dir=args.output_dir,
            val_dataset=val_set,
            eval_steps=args.eval_steps,
            eval_batch_size=8,
            train_sizes=args.train_sizes,
            val_sizes=[args.image_size],
            prompt=args.prompt,
            val_prompt="box",
            num_workers=args.num_workers,
            learning_rate=args.learning_rate,
            lr_step_epochs=args.lr_step_epochs,
            lr_gamma=args.lr_gamma,
            max_grad_norm=args.max_grad_norm,
            batch_size=args.batch_size,
            epochs=args.epochs,
            max_steps=args.max_steps,
            seed=args.seed,
            save_steps=args.save_steps,
            keep_last=2,
            resume=args.resume,
            log_with=[],
        )
        timings["train_seconds"] = round(time.perf_counter() - start, 1)
        timings["steps"] = result.global_step
        print(
            f"Trained {result.global_step} steps in {timings['train_seconds']:.0f} s; best {result.best}.", flush=True
        )

    results = {"settings": vars(args) | {"output_dir": str(args.output_dir), "data_dir": str(args.data_dir)}}
    results.update(timings)
    for name in ("best", "final"):
        folder = args.output_dir / name
        if folder.is_dir():
            results[name] = test_model(folder, tests, args)
    (args.output_dir / "test_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    if args.install_default:
        source = args.output_dir / args.install_from
        if args.iou_steps > 0:
            source = calibrate_iou_head(source, train_set, args)
        install_default(source, args.install_dir, parse_ba(args.install_ba))
        results["installed"] = {"ba": parse_ba(args.install_ba)} | test_model(args.install_dir, tests, args)
        (args.install_dir / "test_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.output_dir / "test_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
