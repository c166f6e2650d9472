"""Segmentation data: A/ photos and B/ label maps (palette, greyscale, colour with a palette),
the ignore index, nearest-neighbour resizing, and the errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from privaudit.data.labels import folder_palette, load_segmentation_pairs
from privaudit.errors import DataError, InputError
from seg_helpers import PALETTE, palette_image, seg_arrays, write_seg


def test_palette_and_greyscale_give_the_same_indices(tmp_path: Path):
    a = load_segmentation_pairs(write_seg(tmp_path / "p", 3, label_format="palette"), num_classes=4)
    b = load_segmentation_pairs(write_seg(tmp_path / "g", 3, label_format="grey"), num_classes=4)
    expected = np.stack([lab for _, lab in seg_arrays(3)])
    assert a.targets.shape == (3, 1, 32, 32) and a.inputs.shape == (3, 3, 32, 32)
    assert (a.targets[:, 0].numpy() == expected).all()
    assert (b.targets == a.targets).all()
    assert folder_palette(tmp_path / "p", 4) == PALETTE[:4]
    assert folder_palette(tmp_path / "g", 4) is None


def test_colour_label_maps_need_a_palette(tmp_path: Path):
    root = write_seg(tmp_path / "rgb", 2, label_format="rgb")
    with pytest.raises(DataError, match="colour \\(RGB\\) label map"):
        load_segmentation_pairs(root, num_classes=4)
    s = load_segmentation_pairs(root, num_classes=4, palette=PALETTE[:4])
    assert (s.targets[:, 0].numpy() == np.stack([lab for _, lab in seg_arrays(2)])).all()
    with pytest.raises(DataError, match="not in the palette"):
        load_segmentation_pairs(root, num_classes=4, palette=PALETTE[:2])


def test_resizing_labels_uses_nearest_neighbour(tmp_path: Path):
    root = write_seg(tmp_path / "d", 2, size=32)
    small = load_segmentation_pairs(root, num_classes=4, size=16)
    full = load_segmentation_pairs(root, num_classes=4)
    assert small.targets.shape == (2, 1, 16, 16)
    # every value is a class of the original (no interpolated, invented classes), and the 8x8 blocks survive
    assert set(np.unique(small.targets.numpy())) <= set(np.unique(full.targets.numpy()))
    assert small.resized["count"] == 2


def test_ignore_index_and_values_above_the_classes(tmp_path: Path):
    root = write_seg(tmp_path / "d", 2, num_classes=4)
    labels = np.asarray(Image.open(root / "B" / "s000.png")).copy()
    labels[:4, :4] = 255
    palette_image(labels).save(root / "B" / "s000.png")
    s = load_segmentation_pairs(root, num_classes=4)  # 255 is the default ignore index
    assert (s.targets[0, 0, :4, :4] == 255).all()
    with pytest.raises(DataError, match="label value 255.*--num-classes or --ignore-index"):
        load_segmentation_pairs(root, num_classes=4, ignore_index=0)
    with pytest.raises(DataError, match="label value 3 .*3 classes"):
        load_segmentation_pairs(root, num_classes=3)


def test_errors_name_the_file_and_the_fix(tmp_path: Path):
    root = write_seg(tmp_path / "d", 2)
    # size mismatch between a photo and its label map
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(root / "B" / "s001.png")
    with pytest.raises(DataError, match="s001.png is 16x16 but its photo"):
        load_segmentation_pairs(root, num_classes=4)
    # a JPEG label map
    root2 = write_seg(tmp_path / "j", 2)
    (root2 / "B" / "s001.png").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(root2 / "B" / "s001.jpg")
    with pytest.raises(DataError, match="JPEG/WebP label map"):
        load_segmentation_pairs(root2, num_classes=4)
    # no B/
    (tmp_path / "noB" / "A").mkdir(parents=True)
    with pytest.raises(DataError, match="no A/ and B/"):
        load_segmentation_pairs(tmp_path / "noB", num_classes=4)
    # every pixel unlabelled
    root3 = write_seg(tmp_path / "u", 2)
    palette_image(np.full((32, 32), 255, np.uint8)).save(root3 / "B" / "s000.png")
    with pytest.raises(DataError, match="no labelled pixel"):
        load_segmentation_pairs(root3, num_classes=4)
    # unmatched names
    root4 = write_seg(tmp_path / "m", 2)
    (root4 / "B" / "s001.png").rename(root4 / "B" / "other.png")
    with pytest.raises(DataError, match="no partner with the same name"):
        load_segmentation_pairs(root4, num_classes=4)
    with pytest.raises(InputError, match="--num-classes"):
        load_segmentation_pairs(root, num_classes=1)
    with pytest.raises(InputError, match="--ignore-index"):
        load_segmentation_pairs(root, num_classes=4, ignore_index=300)
