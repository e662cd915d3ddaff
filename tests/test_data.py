"""Dataset loading (image folders, save_to_disk, presets, COCO objects and files), conversions, bad samples, prompts."""

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from basam_hf.data import (
    PRESETS,
    SampleError,
    SegmentationDataset,
    binarize_mask,
    interior_point,
    load_coco_dataset,
    load_segmentation_dataset,
    mask_box,
    polygons_to_mask,
    prompts_from_mask,
    rle_decode,
    rle_string_to_counts,
    sample_rng,
    to_rgb,
    write_image_folder,
)


def _rect_mask(height=40, width=50, box=(10, 5, 30, 20)) -> np.ndarray:
    """Boolean mask with rows box[0]:box[2] and columns box[1]:box[3] set."""
    mask = np.zeros((height, width), dtype=bool)
    mask[box[0] : box[2], box[1] : box[3]] = True
    return mask


def _image(height=40, width=50, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _write_folder(root, samples: dict) -> None:
    """samples: stem -> (image, mask image or None)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, (image, mask) in samples.items():
        image.save(root / "images" / f"{stem}.png")
        if mask is not None:
            mask.save(root / "masks" / f"{stem}.png")


def _mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255)


# --- image folders -----------------------------------------------------------------------------------------------


def test_image_folder_loads_samples_by_stem(tmp_path):
    _write_folder(tmp_path, {f"s{i}": (_image(seed=i), _mask_image(_rect_mask())) for i in (2, 0, 1)})
    dataset = load_segmentation_dataset(tmp_path, max_samples=2)
    assert dataset.ids == ["s0", "s1"] and len(dataset) == 2
    sample = dataset[1]
    assert sample["id"] == "s1" and sample["image"].mode == "RGB" and sample["image"].size == (50, 40)
    assert sample["mask"].dtype == bool and np.array_equal(sample["mask"], _rect_mask())
    assert np.array_equal(np.asarray(sample["image"]), np.asarray(_image(seed=1)))


def test_bad_samples_raise_errors_naming_them(tmp_path):
    _write_folder(
        tmp_path,
        {
            "good": (_image(), _mask_image(_rect_mask())),
            "small_mask": (_image(), _mask_image(_rect_mask(height=30))),
            "no_mask": (_image(), None),
            "broken": (_image(), _mask_image(_rect_mask())),
        },
    )
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = load_segmentation_dataset(tmp_path)
    assert dataset[dataset.ids.index("good")]["mask"].any()
    expected = {
        "small_mask": "mask size 30x50 differs from image size 40x50",
        "no_mask": "no mask file",
        "broken": "cannot read the image",
    }
    for sample_id, message in expected.items():
        with pytest.raises(SampleError, match=message) as error:
            dataset[dataset.ids.index(sample_id)]
        assert error.value.sample_id == sample_id and sample_id in str(error.value)


# --- conversions -------------------------------------------------------------------------------------------------


def test_images_of_any_mode_become_rgb_uint8():
    gray = Image.fromarray(np.array([[0, 128], [255, 7]], dtype=np.uint8))
    assert np.array_equal(np.asarray(to_rgb(gray))[..., 1], np.asarray(gray))
    rgba = Image.fromarray(
        np.array([[[200, 100, 50, 0], [200, 100, 50, 255]], [[255, 255, 255, 128], [0, 0, 0, 0]]], dtype=np.uint8)
    )
    rgb = np.asarray(to_rgb(rgba))
    assert rgb[0, 0].tolist() == [0, 0, 0]  # transparent -> black
    assert rgb[0, 1].tolist() == [200, 100, 50]  # opaque -> unchanged
    assert rgb[1, 0].tolist() == [128, 128, 128]  # half transparent white on black
    sixteen = Image.fromarray(np.array([[0, 65535], [32896, 257]], dtype=np.uint16))
    assert sixteen.mode.startswith("I;16")
    assert np.asarray(to_rgb(sixteen))[..., 0].tolist() == [[0, 255], [128, 1]]
    palette = gray.convert("P")
    assert to_rgb(palette).mode == "RGB"
    assert np.asarray(to_rgb(np.array([[0.0, 1.0]])))[..., 0].tolist() == [[0, 255]]  # float arrays in [0, 1]
    assert to_rgb(Image.fromarray(np.ones((2, 2), dtype=bool))).mode == "RGB"


def test_mask_binarisation_rule():
    eight_bit = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert binarize_mask(Image.fromarray(eight_bit)).tolist() == [[False, False, True, True]]
    labels = np.array([[0, 1, 1, 0]], dtype=np.uint8)  # 0/1 label masks: 1 is the object
    assert binarize_mask(Image.fromarray(labels)).tolist() == [[False, True, True, False]]
    sixteen = Image.fromarray(np.array([[0, 32767, 32768, 65535]], dtype=np.uint16))
    assert binarize_mask(sixteen).tolist() == [[False, False, True, True]]
    assert binarize_mask(Image.fromarray(eight_bit).convert("1")).tolist() == [[False, False, True, True]]
    assert binarize_mask(np.array([[0.2, 0.5, 0.7]])).tolist() == [[False, False, True]]
    palette = Image.fromarray(np.array([[0, 2, 3]], dtype=np.uint8), mode="L").convert("P")
    assert binarize_mask(palette).tolist() == [[False, True, True]]  # any nonzero palette index
    rgb = Image.fromarray(np.stack([eight_bit] * 3, axis=-1))
    assert binarize_mask(rgb).tolist() == [[False, False, True, True]]


# --- save_to_disk datasets, columns and presets ------------------------------------------------------------------


def _hf_dataset(columns: dict[str, str], count: int = 3, with_objects: bool = False) -> datasets.Dataset:
    """A dataset with an image column and a mask / label / objects column named as in `columns`."""
    rows = {columns["image"]: [_image(seed=i) for i in range(count)]}
    if "mask" in columns:
        rows[columns["mask"]] = [_mask_image(_rect_mask(box=(5 + i, 5, 25, 30))) for i in range(count)]
    if "id" in columns:
        rows[columns["id"]] = [f"ISIC_{i:07d}" for i in range(count)]
    if with_objects:
        rows[columns["objects"]] = [
            {
                "ids": [10 * i, 10 * i + 1],
                "iscrowd": [0, 1],
                "segmentation": [[[5, 5, 20, 5, 20, 15, 5, 15]], [[0, 0, 3, 0, 3, 3]]],
            }
            for i in range(count)
        ]
    return datasets.Dataset.from_dict(rows)


def test_save_to_disk_dataset_and_missing_column_message(tmp_path):
    _hf_dataset({"image": "picture", "mask": "gt"}).save_to_disk(tmp_path / "saved")
    dataset = load_segmentation_dataset(tmp_path / "saved", image_column="picture", mask_column="gt")
    assert dataset.ids == ["0", "1", "2"] and dataset[2]["mask"].sum() == (25 - 7) * 25
    with pytest.raises(ValueError) as error:
        load_segmentation_dataset(tmp_path / "saved", mask_column="gt")  # image column defaults to `image`
    message = str(error.value)
    assert "'image'" in message and "['picture', 'gt']" in message and "--image-column" in message
    found = load_segmentation_dataset(tmp_path / "saved", image_column="picture")  # `gt` is a mask candidate
    assert found.info["mask_column"] == "gt"
    _hf_dataset({"image": "image", "mask": "seg"}).save_to_disk(tmp_path / "unnamed")
    with pytest.raises(ValueError, match=r"No mask column found.*\['image', 'seg'\].*--mask-column"):
        load_segmentation_dataset(tmp_path / "unnamed")


def test_dataset_dict_split_selection(tmp_path):
    splits = datasets.DatasetDict(
        train=_hf_dataset({"image": "image", "mask": "mask"}), test=_hf_dataset({"image": "image", "mask": "mask"}, 1)
    )
    splits.save_to_disk(tmp_path / "splits")
    assert len(load_segmentation_dataset(tmp_path / "splits", "test")) == 1
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\]"):
        load_segmentation_dataset(tmp_path / "splits")
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_segmentation_dataset(tmp_path / "splits", "validation")


def test_unreachable_hub_dataset_fails_clearly():
    # The tests run with HF_HUB_OFFLINE=1 (conftest), as a user without network would.
    with pytest.raises(OSError, match="Could not load dataset 'nobody/no-such-dataset'.*save_to_disk folder"):
        load_segmentation_dataset("nobody/no-such-dataset", "test")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_load_look_alike_local_datasets(tmp_path, name):
    preset = PRESETS[name]
    columns = {"image": preset.image_column}
    if preset.mask_column:
        columns["mask"] = preset.mask_column
    if preset.annotations_column:
        columns["objects"] = preset.annotations_column
    if preset.id_column:
        columns["id"] = preset.id_column
    if preset.mask_column is None and preset.annotations_column is None:
        columns["mask"] = "mask"  # the card names no mask column: the first Image column of the candidates is used
    split = preset.default_split or "train"  # no split on the card: the only one is used
    look_alike = datasets.DatasetDict({split: _hf_dataset(columns, with_objects="objects" in columns)})
    look_alike.save_to_disk(tmp_path / name)
    dataset = load_segmentation_dataset(tmp_path / name, preset=name)
    assert dataset.info["split"] == split and len(dataset) == 3
    sample = dataset[0]
    assert sample["mask"].any() and sample["mask"].shape == (40, 50)
    if preset.id_column:
        assert dataset.ids[0] == "ISIC_0000000"
    if preset.annotations_column:  # one sample per non-crowd object, named by image and object id
        assert dataset.ids == ["0#0", "1#10", "2#20"] and dataset.info["excluded_crowd_objects"] == 3


def test_preset_with_other_columns_fails_clearly(tmp_path):
    datasets.DatasetDict(test=_hf_dataset({"image": "img", "mask": "mask"})).save_to_disk(tmp_path / "other")
    with pytest.raises(ValueError, match=r"preset 'duts' expects.*'img'.*--image-column"):
        load_segmentation_dataset(tmp_path / "other", preset="duts")
    with pytest.raises(ValueError, match="Unknown dataset preset 'nope'"):
        load_segmentation_dataset(tmp_path / "other", preset="nope")
    # dis5k: the card names no splits and no columns; what the data has is reported.
    two_splits = datasets.DatasetDict(
        train=_hf_dataset({"image": "image", "mask": "seg"}), test=_hf_dataset({"image": "image", "mask": "seg"})
    )
    two_splits.save_to_disk(tmp_path / "dis")
    with pytest.raises(ValueError, match=r"has splits \['train', 'test'\]; choose one with --split"):
        load_segmentation_dataset(tmp_path / "dis", preset="dis5k")
    with pytest.raises(ValueError, match=r"No mask column found.*\['image', 'seg'\].*--mask-column"):
        load_segmentation_dataset(tmp_path / "dis", "test", preset="dis5k")
    assert (
        load_segmentation_dataset(tmp_path / "dis", "test", preset="dis5k", mask_column="seg").info["split"] == "test"
    )


# The facts of the dataset cards and viewers (checked 2026-12), written out independently of the presets:
# hub id, default split, splits, (image, mask) columns, id column, verified facts.
CARD_FACTS = {
    "duts": ("nobg/DUTS", "test", ("train", "test"), ("image", "mask"), None, {"splits", "columns"}),
    "cod10k": ("nobg/COD10K", "test", ("train", "test"), ("image", "mask"), None, {"splits", "columns"}),
    "dis5k": ("nobg/DIS5K", None, (), ("image", None), None, set()),
    "dis5k-train": ("unography/DIS5K-train", "train", ("train",), ("image", "mask"), None, {"splits", "columns"}),
    "isic2016": ("MedOtter/ISIC2016", None, (), ("image", "mask"), "image_id", {"columns"}),
    "isic2018": (
        "surajbijjahalli/ISIC2018",
        "test",
        ("train", "validation", "test"),
        ("image", "label"),
        None,
        {"splits", "columns"},
    ),
}


def test_presets_follow_the_dataset_cards():
    assert set(PRESETS) == set(CARD_FACTS)
    for name, (hub_id, default_split, splits, columns, id_column, verified) in CARD_FACTS.items():
        preset = PRESETS[name]
        assert (preset.hub_id, preset.default_split, preset.splits) == (hub_id, default_split, splits), name
        assert (preset.image_column, preset.mask_column, preset.annotations_column) == (*columns, None), name
        assert (preset.id_column, set(preset.verified)) == (id_column, verified), name
    assert "no splits" in PRESETS["dis5k"].notes and "unography/DIS5K-train" in PRESETS["dis5k"].notes
    with pytest.raises(ValueError, match=r"coco2017 preset was removed.*--coco-annotations .*--images"):
        load_segmentation_dataset(None, preset="coco2017")


# --- COCO-style annotations --------------------------------------------------------------------------------------


def _encode_rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string, written from its specification (5-bit groups, deltas after the second)."""
    chars = []
    for index, count in enumerate(counts):
        value = count - counts[index - 2] if index > 2 else count
        while True:
            group = value & 0x1F
            value >>= 5
            done = (value == 0 and not group & 0x10) or (value == -1 and group & 0x10)
            chars.append(chr(group + (0 if done else 0x20) + 48))
            if done:
                break
    return "".join(chars)


def _counts(mask: np.ndarray) -> list[int]:
    """Uncompressed column-major RLE counts, starting with background."""
    flat = mask.T.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def test_rle_decoding_uncompressed_and_compressed():
    mask = np.zeros((6, 7), dtype=bool)
    mask[1:4, 2:5] = True
    mask[5, 0] = True
    mask[0, 6] = True
    counts = _counts(mask)
    assert sum(counts) == 42
    assert np.array_equal(rle_decode({"size": [6, 7], "counts": counts}), mask)
    encoded = _encode_rle_string(counts)
    assert rle_string_to_counts(encoded) == counts
    assert np.array_equal(rle_decode({"size": [6, 7], "counts": encoded.encode()}), mask)
    assert rle_string_to_counts(_encode_rle_string([3, 100, 2, 5000, 1])) == [
        3,
        100,
        2,
        5000,
        1,
    ]  # large and negative deltas
    with pytest.raises(ValueError, match="sum to"):
        rle_decode({"size": [6, 7], "counts": [1, 2]})


def test_polygon_rasterisation_by_pixel_centres():
    # The square from (2, 1) to (6, 4) covers the pixel centres of columns 2..5 and rows 1..3.
    mask = polygons_to_mask([[2, 1, 6, 1, 6, 4, 2, 4]], height=6, width=8)
    assert np.array_equal(mask, _rect_mask(6, 8, (1, 2, 4, 6)))
    assert np.array_equal(polygons_to_mask([2, 1, 6, 1, 6, 4, 2, 4], 6, 8), mask)  # a flat list is one polygon
    # A triangle: pixel centres strictly below the diagonal from (0, 0) to (4, 4) (centres on it lie on the right
    # edge, which is exclusive); a second polygon adds to the object.
    triangle = polygons_to_mask([[0, 0, 4, 4, 0, 4], [6, 0, 8, 0, 8, 1]], 5, 8)
    expected = np.zeros((5, 8), dtype=bool)
    for row in range(4):
        expected[row, :row] = True
    expected[0, 7] = True  # centre (7.5, 0.5) is inside the second triangle
    assert np.array_equal(triangle, expected)


def test_coco_objects_as_list_of_dicts_with_rle(tmp_path):
    first, second = _rect_mask(box=(0, 0, 10, 10)), _rect_mask(box=(20, 20, 35, 45))
    uncompressed = [
        {"id": 7, "segmentation": {"size": [40, 50], "counts": _counts(first)}, "iscrowd": 0},
        {"id": 9, "segmentation": {"size": [30, 50], "counts": [1500]}, "iscrowd": 0},  # wrong size
    ]
    compressed = [{"id": 8, "segmentation": {"size": [40, 50], "counts": _encode_rle_string(_counts(second))}}]
    datasets.Dataset.from_dict({"image": [_image()], "annotations": [uncompressed]}).save_to_disk(tmp_path / "a")
    datasets.Dataset.from_dict({"image": [_image()], "annotations": [compressed]}).save_to_disk(tmp_path / "b")
    dataset = load_segmentation_dataset(tmp_path / "a", annotations_column="annotations")
    assert dataset.ids == ["0#7", "0#9"] and np.array_equal(dataset[0]["mask"], first)
    with pytest.raises(SampleError, match="'0#9'.*segmentation size 30x50 differs"):
        dataset[1]
    dataset = load_segmentation_dataset(tmp_path / "b", annotations_column="annotations")
    assert dataset.ids == ["0#8"] and np.array_equal(dataset[0]["mask"], second)


def _write_coco(root) -> tuple:
    """A COCO instances file and its images folder, in the official layout, written by hand; returns (file,
    folder, the expected masks by sample id)."""
    polygon_mask, rle_mask, string_mask = (
        _rect_mask(box=(2, 3, 12, 20)),
        _rect_mask(box=(20, 20, 35, 45)),
        _rect_mask(box=(0, 40, 40, 50)),
    )
    (root / "val").mkdir(parents=True)
    _image(seed=1).save(root / "val" / "a.jpg")
    _image(30, 20, seed=2).save(root / "val" / "b.png")
    _image(seed=4).save(root / "val" / "d.png")
    coco = {
        "info": {"description": "test"},
        "categories": [{"id": 1, "name": "thing"}],
        "images": [
            {"id": 11, "file_name": "a.jpg", "height": 40, "width": 50},
            {"id": 12, "file_name": "upload/1/b.png", "height": 30, "width": 20},  # Label Studio keeps a prefix
            {"id": 13, "file_name": "c.png", "height": 40, "width": 50},  # not in the folder
            {"id": 14, "file_name": "d.png", "height": 20, "width": 50},  # the file is 40 x 50
        ],
        "annotations": [
            # polygon (x, y): columns 3..19, rows 2..11
            {"id": 1, "image_id": 11, "category_id": 1, "iscrowd": 0, "segmentation": [[3, 2, 20, 2, 20, 12, 3, 12]]},
            {"id": 2, "image_id": 11, "iscrowd": 0, "segmentation": {"size": [40, 50], "counts": _counts(rle_mask)}},
            {"id": 3, "image_id": 11, "iscrowd": 1, "segmentation": {"size": [40, 50], "counts": [2000]}},
            {"id": 4, "image_id": 12, "iscrowd": 0, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
            {
                "id": 5,
                "image_id": 11,
                "segmentation": {"size": [40, 50], "counts": _encode_rle_string(_counts(string_mask))},
            },
            {"id": 6, "image_id": 13, "iscrowd": 0, "segmentation": [[0, 0, 10, 0, 10, 10]]},
            {"id": 7, "image_id": 14, "iscrowd": 0, "segmentation": [[0, 0, 10, 0, 10, 10]]},
            {"id": 8, "image_id": 11, "iscrowd": 0, "segmentation": [], "bbox": [1, 1, 5, 5]},  # box only
            {"id": 9, "image_id": 99, "iscrowd": 0, "segmentation": [[0, 0, 1, 0, 1, 1]]},  # no such image
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    square = np.zeros((30, 20), dtype=bool)
    square[:10, :10] = True
    expected = {"11#1": polygon_mask, "11#2": rle_mask, "11#5": string_mask, "12#4": square}
    return root / "annotations" / "instances_val.json", root / "val", expected


def test_coco_instances_file_with_its_images_folder(tmp_path):
    annotations, images, expected = _write_coco(tmp_path)
    with pytest.warns(UserWarning) as caught:
        dataset = load_coco_dataset(annotations, images)
    warned = " ".join(str(warning.message) for warning in caught)
    assert "1 annotations" in warned and "1 images of instances_val.json are not in" in warned
    # One sample per non-crowd object, images in file order, then annotations in file order; the crowd one left out.
    assert dataset.ids == ["11#1", "11#2", "11#5", "11#8", "12#4", "13#6", "14#7"]
    assert dataset.info["excluded_crowd_objects"] == 1 and dataset.info["kind"] == "coco"
    assert dataset.info["source"] == str(annotations) and dataset.info["missing_images"] == 1
    for sample_id, mask in expected.items():
        sample = dataset[dataset.ids.index(sample_id)]
        assert sample["mask"].dtype == bool and np.array_equal(sample["mask"], mask), sample_id
        assert sample["image"].mode == "RGB" and sample["image"].size == mask.shape[::-1]
    reasons = {
        "11#8": "segmentation is empty",
        "13#6": "image c.png of instances_val.json is not in",
        "14#7": "the image is 40x50 but instances_val.json gives 20x50",
    }
    for sample_id, reason in reasons.items():
        with pytest.raises(SampleError, match=reason) as error:
            dataset[dataset.ids.index(sample_id)]
        assert error.value.sample_id == sample_id
    with pytest.warns(UserWarning, match="belong to no image"):
        assert load_coco_dataset(annotations, images, max_samples=2).ids == ["11#1", "11#2"]


def test_coco_file_errors_name_the_problem(tmp_path):
    annotations, images, _ = _write_coco(tmp_path)
    with pytest.raises(FileNotFoundError, match="No COCO annotations file at"):
        load_coco_dataset(tmp_path / "missing.json", images)
    with pytest.raises(FileNotFoundError, match="No images folder at"):
        load_coco_dataset(annotations, tmp_path / "nowhere")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"None of the 4 annotated images .*--images"):
        load_coco_dataset(annotations, tmp_path / "annotations")  # a folder, but not the images'
    not_coco = tmp_path / "labels.json"
    not_coco.write_text(json.dumps({"images": [], "labels": []}))
    with pytest.raises(ValueError, match=r"not a COCO instances file.*'annotations'.*found \['images', 'labels'\]"):
        load_coco_dataset(not_coco, images)
    not_coco.write_text("{not json")
    with pytest.raises(ValueError, match="is not a JSON file"):
        load_coco_dataset(not_coco, images)
    not_coco.write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "iscrowd": 1}]})
    )
    with pytest.raises(ValueError, match="no object to use: 1 annotations, 1 of them crowd"):
        load_coco_dataset(not_coco, images)


# --- prompts -----------------------------------------------------------------------------------------------------


def test_box_and_interior_point():
    mask = _rect_mask(box=(10, 5, 31, 20))  # rows 10..30, columns 5..19
    assert mask_box(mask).tolist() == [5, 10, 19, 30]
    assert prompts_from_mask(mask, "box", sample_rng(0, "a"))["boxes"].tolist() == [[5, 10, 19, 30]]
    # Interior-most pixel of an L shape: the centre of its thick part, not of its bounding box.
    shape = np.zeros((30, 30), dtype=bool)
    shape[2:27, 2:11] = True  # thick vertical bar, 25 x 9
    shape[22:25, 2:29] = True  # thin horizontal bar
    x, y = interior_point(shape)
    assert 5 <= x <= 7 and 6 <= y <= 20 and shape[int(y), int(x)]
    # The image border counts as background: a full mask's interior point is the image centre.
    assert interior_point(np.ones((5, 7), dtype=bool)).tolist() == [3, 2]


def test_random_points_and_negatives_are_seeded_and_inside():
    mask = _rect_mask()
    first = prompts_from_mask(mask, "points:5", sample_rng(3, "img"), negatives=2)
    again = prompts_from_mask(mask, "points:5", sample_rng(3, "img"), negatives=2)
    other = prompts_from_mask(mask, "points:5", sample_rng(4, "img"), negatives=2)
    assert np.array_equal(first["points"], again["points"]) and not np.array_equal(first["points"], other["points"])
    assert first["labels"].tolist() == [1] * 5 + [0] * 2
    xs, ys = first["points"][:, 0].astype(int), first["points"][:, 1].astype(int)
    assert mask[ys[:5], xs[:5]].all() and not mask[ys[5:], xs[5:]].any()
    assert len({tuple(p) for p in first["points"][:5].tolist()}) == 5  # distinct
    single = prompts_from_mask(mask, "point", sample_rng(0, "img"))
    assert single["labels"].tolist() == [1] and mask[int(single["points"][0, 1]), int(single["points"][0, 0])]


def test_box_jitter_is_seeded_and_stays_in_the_image():
    mask = _rect_mask()
    boxes = [prompts_from_mask(mask, "box", sample_rng(seed, "x"), jitter=0.5)["boxes"][0] for seed in range(20)]
    assert np.array_equal(boxes[0], prompts_from_mask(mask, "box", sample_rng(0, "x"), jitter=0.5)["boxes"][0])
    for box in boxes:
        assert 0 <= box[0] <= box[2] <= 49 and 0 <= box[1] <= box[3] <= 39
    assert len({tuple(box) for box in map(tuple, boxes)}) == 20


def test_prompt_errors():
    with pytest.raises(ValueError, match="empty mask"):
        prompts_from_mask(np.zeros((4, 4), dtype=bool), "box", sample_rng(0, "e"))
    for bad in ("boxes", "points:0", "points:x", "point:2"):
        with pytest.raises(ValueError, match="Unknown prompt"):
            prompts_from_mask(_rect_mask(), bad, sample_rng(0, "e"))


def test_write_image_folder_shrinks_to_max_side_and_resumes(tmp_path):
    """A dataset made when read is written once as an image folder, shrunk to `max_side` (the mask by nearest
    neighbour, so it stays binary and aligned with the image); a rerun keeps what is on disk."""
    reads = []
    masks = [np.zeros((40, 100), bool), np.zeros((30, 20), bool)]
    masks[0][10:30, 20:60] = True
    masks[1][5:25, 5:15] = True

    def read(index: int) -> dict:
        reads.append(index)
        mask = masks[index]
        image = Image.fromarray(np.where(mask[..., None], 200, 30).astype(np.uint8).repeat(3, axis=2))
        return {"id": f"s{index}", "image": image, "mask": mask}

    dataset = SegmentationDataset(["s0", "s1"], read, {"source": "test"})
    root = write_image_folder(dataset, tmp_path / "folder", max_side=50, progress=False)
    loaded = load_segmentation_dataset(str(root))
    first, second = loaded[0], loaded[1]
    assert first["image"].size == (50, 20) and first["mask"].shape == (20, 50)
    np.testing.assert_array_equal(first["mask"], masks[0][::2, ::2])  # nearest of an exact 2x shrink
    assert second["image"].size == (20, 30)  # already within max_side: unchanged
    np.testing.assert_array_equal(second["mask"], masks[1])
    (root / "masks" / "s1.png").unlink()  # as if interrupted before s1's mask was written
    write_image_folder(dataset, root, max_side=50, progress=False)
    assert reads == [0, 1, 1]


def test_write_image_folder_in_worker_processes_writes_the_same_files(tmp_path):
    """Rendering in forked workers (the dataset reads through a closure, which does not pickle) gives the same
    folder, byte for byte, as rendering in the calling process."""
    rng = np.random.default_rng(0)
    masks = [rng.random((30 + i, 40)) > 0.5 for i in range(9)]

    def read(index: int) -> dict:
        image = Image.fromarray((masks[index][..., None] * rng.integers(0, 255, 3)).astype(np.uint8))
        return {"id": f"s{index}", "image": image, "mask": masks[index]}

    seeded = {}  # the images must not depend on the process: draw their colours once, here

    def read_seeded(index: int) -> dict:
        seeded.setdefault(index, read(index))
        return seeded[index]

    for index in range(len(masks)):
        read_seeded(index)
    dataset = SegmentationDataset([f"s{i}" for i in range(len(masks))], read_seeded, {"source": "test"})
    serial = write_image_folder(dataset, tmp_path / "serial", max_side=32, progress=False)
    forked = write_image_folder(dataset, tmp_path / "forked", max_side=32, progress=False, num_workers=2)
    files = sorted(p.relative_to(serial) for p in serial.rglob("*.png"))
    assert len(files) == 2 * len(masks)
    assert files == sorted(p.relative_to(forked) for p in forked.rglob("*.png"))
    for name in files:
        assert (serial / name).read_bytes() == (forked / name).read_bytes(), name
