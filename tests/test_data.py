import numpy as np
import pytest
from PIL import Image

from edgecompress import data
from edgecompress.errors import DataError, OptionError
from conftest import write_npz


def test_shapes_are_deterministic_balanced_and_seeded():
    a = data.shapes(40, size=(16, 16), seed=3)
    b = data.shapes(40, size=(16, 16), seed=3)
    c = data.shapes(40, size=(16, 16), seed=4)
    assert a.x.dtype == np.uint8 and a.x.shape == (40, 16, 16, 3)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert np.bincount(a.y).tolist() == [4] * 10
    assert a.classes == data.SHAPE_CLASSES


def test_shapes_grayscale_and_any_size():
    ds = data.shapes(10, size=(8, 12), channels=1)
    assert ds.x.shape == (10, 8, 12, 1)


@pytest.mark.parametrize("how, expected", [("raw", 255.0), ("unit", 1.0), ("symmetric", 1.0)])
def test_preprocess_top_of_range(how, expected):
    x = np.array([[[[0, 255, 128]]]], np.uint8)
    y = data.preprocess(x, how)
    assert y.dtype == np.float32 and y.max() == pytest.approx(expected)
    assert y.min() == pytest.approx(-1.0 if how == "symmetric" else 0.0)


def test_unknown_preprocess_lists_choices():
    with pytest.raises(OptionError, match="raw, unit, symmetric"):
        data.preprocess(np.zeros((1, 1, 1, 3), np.uint8), "imagenet")


def test_npz_round_trip_with_classes(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    path = write_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 1, 0]),
                     classes=np.array(["a", "b", "c"]))
    ds = data.load(path)
    np.testing.assert_array_equal(ds.x, x)
    assert ds.y.tolist() == [0, 1, 2, 1, 0] and ds.classes == ("a", "b", "c")


def test_npz_grayscale_without_labels_or_classes(tmp_path):
    path = write_npz(tmp_path / "d.npz", x=np.zeros((3, 8, 8), np.uint8))
    ds = data.load(path)
    assert ds.x.shape == (3, 8, 8, 1) and ds.y is None
    with pytest.raises(DataError, match="no labels"):
        ds.require_labels()


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((2, 8, 8, 3), np.uint8)}, "no array `x`"),
    ({"x": np.zeros((8, 8), np.uint8)}, "expected N x H x W x C"),
    ({"x": np.full((2, 8, 8, 3), 0.5, np.float32)}, "expected uint8"),
    ({"x": np.zeros((2, 8, 8, 3), np.uint8), "y": np.array([0])}, "expected 2 integer labels"),
    ({"x": np.zeros((2, 8, 8, 3), np.uint8), "y": np.array([0, 5]),
      "classes": np.array(["a", "b"])}, "label 5 but only 2 classes"),
    ({"x": np.zeros((2, 8, 8, 3), np.uint8), "y": np.array([0, -1])}, "negative label"),
])
def test_bad_npz_is_a_data_error(tmp_path, arrays, message):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        data.load(path)


def test_not_an_npz_and_missing_file(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="is not an .npz archive"):
        data.load(tmp_path / "junk.npz")
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")  # numpy took it for a pickle
    with pytest.raises(DataError, match="is not an .npz archive") as error:
        data.load(tmp_path / "text.npz")
    assert "pickle" not in str(error.value)
    with pytest.raises(DataError, match="does not exist"):
        data.load(tmp_path / "missing.npz")


def _image_folder(root, classes=("cat", "dog"), per_class=2, size=(20, 10)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (c * 200, i * 100, 50)).save(root / name / f"{i}.png")
    return root


def test_folder_is_read_resized_and_labelled(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    ds = data.load(root, image_size=(8, 12))
    assert ds.x.shape == (4, 8, 12, 3) and ds.classes == ("cat", "dog")
    assert ds.y.tolist() == [0, 0, 1, 1]
    assert ds.x[2, 0, 0, 0] == 200  # dog images are red: resized, not garbled
    gray = data.load(root, image_size=(8, 8), channels=1)
    assert gray.x.shape == (4, 8, 8, 1)


def test_folder_errors_name_the_problem(tmp_path):
    root = _image_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match="at least two"):
        data.load(root, image_size=(8, 8))
    root = _image_folder(tmp_path / "two")
    (root / "cat" / "notes.png").write_text("not an image")
    with pytest.warns(UserWarning, match="not readable images: .*notes.png"):
        data.load(root, image_size=(8, 8))


def test_take_and_representative(train_set):
    sub = train_set.take(7)
    assert len(sub) == 7 and np.array_equal(sub.x, train_set.x[:7])
    batches = list(train_set.representative(50, "unit")())
    assert len(batches) == 50 and batches[0][0].shape == (1, 16, 16, 3)
    assert batches[0][0].max() <= 1.0
    drawn = {int(np.argmax([np.array_equal(b[0][0], x) for x in
                            data.preprocess(train_set.x, "unit")])) for b in batches}
    assert len(drawn) == 50 and max(drawn) > 50  # random, not the first 50
    with pytest.raises(OptionError, match="at least one sample"):
        train_set.representative(0, "unit")


def test_check_fits_explains_mismatch(train_set):
    with pytest.raises(DataError, match="16x16 with 3 channels but the model takes 32x32"):
        train_set.check_fits((None, 32, 32, 3))


def test_leak_warning_counts_evaluation_images_learned_from():
    images = data.shapes(40, size=(16, 16), seed=5)
    eval_data = images.take(10)
    rest = data.Dataset(images.x[10:], images.y[10:], images.classes, "rest")
    shifted = data.Dataset(eval_data.x[:3].copy(), None, (), "copies")
    shifted.x[1, 0, 0, 0] ^= 1  # one pixel differs: not the same image
    assert data.leak_warning(eval_data, training=rest, transfer=None) is None
    message = data.leak_warning(eval_data, training=images, transfer=shifted)
    assert message.startswith("10 in the training data and 2 in the transfer data of the 10 "
                              "evaluation images")
    assert eval_data.shared_with(data.shapes(5, size=(8, 8))) == 0  # other shape
