"""Datasets: `.npz` files, folders of class sub-folders, and the built-in shapes.

Images are kept as uint8 NHWC and turned into model input by a named preprocessing
(`raw`, `unit`, `symmetric`) only when batches are drawn. A dataset carries the
preprocessing of the model it feeds (`with_preprocess`), so that it is said once and
resolved once. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from .errors import DataError, OptionError
from .options import Preprocess

__all__ = ["SHAPE_CLASSES", "preprocess_scale", "preprocess", "Dataset", "leak_warning", "load",
           "load_npz", "load_folder", "shapes"]

BUILTIN = "shapes"
SHAPE_CLASSES = ("circle", "square", "triangle", "diamond", "cross",
                 "ring", "hbar", "vbar", "star", "frame")


def preprocess_scale(how) -> tuple[float, float]:
    """(divisor, offset) such that model input = pixels / divisor + offset."""
    return {Preprocess.RAW: (1.0, 0.0), Preprocess.UNIT: (255.0, 0.0),
            Preprocess.SYMMETRIC: (127.5, -1.0)}[Preprocess.get(how, "preprocess")]


def _scaled(x: np.ndarray, divisor: float, offset: float) -> np.ndarray:
    x = x.astype(np.float32)
    return x if divisor == 1 and offset == 0 else x / divisor + offset


def preprocess(x: np.ndarray, how) -> np.ndarray:
    """Turns uint8 images into float32 model input.

    Args:
        x: uint8 images, NHWC.
        how: a `Preprocess` or its name.

    Returns:
        float32 array of the same shape.

    Example:
        >>> float(preprocess(np.full((1, 2, 2, 3), 255, np.uint8), "unit").max())
        1.0
    """
    return _scaled(x, *preprocess_scale(how))


@dataclass(frozen=True)
class Dataset:
    """Images (uint8 NHWC), optional integer labels and class names.

    Also the one calibration interface: `representative()` feeds export and every
    technique that needs sample data.
    """

    x: np.ndarray
    y: np.ndarray | None
    classes: tuple[str, ...]
    source: str
    preprocess: Preprocess | None = None  # how the images become the model's input

    def __post_init__(self):
        if self.preprocess is not None:
            object.__setattr__(self, "preprocess", Preprocess.get(self.preprocess,
                                                                  "preprocess"))

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    def take(self, n: int, *, seed: int | None = None) -> "Dataset":
        """The first `n` samples, or `n` drawn at random without replacement with `seed`."""
        n = min(n, len(self))
        if seed is None:
            index = np.arange(n)
        else:
            index = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        y = None if self.y is None else self.y[index]
        return dataclasses.replace(self, x=self.x[index], y=y)

    def split(self, fraction: float, *, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """Holds out a share of each class at random (a stratified split).

        Args:
            fraction: the share of each class to hold out, in (0, 1); at least one image.
            seed: the draw.

        Returns:
            (rest, held out), two `Dataset`s with the same preprocessing.

        Raises:
            OptionError: `fraction` outside (0, 1).
            DataError: the images carry no labels.
        """
        if not 0 < fraction < 1:
            raise OptionError(f"The held-out fraction must be in (0, 1). Received: {fraction}.")
        labels = self.require_labels()
        rng = np.random.default_rng(seed)
        held = np.zeros(len(self), bool)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            count = max(1, round(len(members) * fraction))
            held[rng.choice(members, count, replace=False)] = True
        part = lambda mask, name: dataclasses.replace(  # noqa: E731
            self, x=self.x[mask], y=labels[mask], source=f"{self.source} ({name})")
        return part(~held, "train split"), part(held, "held-out split")

    def shared_with(self, other: "Dataset") -> int:
        """How many of this dataset's images also appear, pixel for pixel, in `other`."""
        if self.image_shape != other.image_shape:
            return 0
        theirs = set(_fingerprints(other.x))
        return sum(f in theirs for f in _fingerprints(self.x))

    def with_preprocess(self, how) -> "Dataset":
        """The same images, fed to a model with another preprocessing.

        Args:
            how: a `Preprocess` or its name: "raw" (0-255), "unit" (/255) or "symmetric"
                (/127.5 - 1).

        Returns:
            A new `Dataset` sharing these arrays.
        """
        return dataclasses.replace(self, preprocess=how)

    def resolve(self, how=None) -> Preprocess:
        """`how` if given, else the dataset's own preprocessing, else an `OptionError`."""
        if how is not None:
            return Preprocess.get(how, "preprocess")
        if self.preprocess is None:
            raise OptionError(f"Say how the images of {self.source} become model input: "
                              f"preprocess= one of {', '.join(Preprocess.values())}, or "
                              "dataset.with_preprocess(...).")
        return self.preprocess

    def batches(self, batch_size: int, how=None
                ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yields (preprocessed images, labels) in order, `batch_size` at a time; `how`
        overrides the dataset's preprocessing."""
        divisor, offset = preprocess_scale(self.resolve(how))
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            y = None if self.y is None else self.y[start:stop]
            yield _scaled(self.x[start:stop], divisor, offset), y

    def representative(self, n: int, how=None, *, seed: int = 0
                       ) -> Callable[[], Iterator[list[np.ndarray]]]:
        """A TFLite `representative_dataset`: `n` images drawn at random, one at a time.

        Random rather than the first `n`: an image folder is read class by class, so its
        first images may all be of one class.
        """
        if n < 1:
            raise OptionError(f"Calibration needs at least one sample. Received: samples={n}.")
        if len(self) == 0:
            raise DataError(f"Dataset {self.source} is empty: nothing to calibrate on.")
        sample = self.take(n, seed=seed)
        how = self.resolve(how)

        def generator():
            for x, _ in sample.batches(1, how):
                yield [x]

        return generator

    def require_labels(self) -> np.ndarray:
        """The labels, or a `DataError` naming the dataset when it has none."""
        if self.y is None:
            raise DataError(f"Dataset {self.source} has no labels `y`; accuracy needs them.")
        return self.y

    def check_fits(self, input_shape) -> None:
        """Raises `DataError` unless the images match a model input shape (N, H, W, C)."""
        expected = tuple(input_shape[1:])
        if len(self) == 0:
            raise DataError(f"Dataset {self.source} is empty.")
        if self.image_shape != expected:
            raise DataError(
                f"Images in {self.source} are {_shape_text(self.image_shape)} but the model "
                f"takes {_shape_text(expected)}. Resize the data or choose a matching model.")


def leak_warning(eval_data: Dataset, **learned_from: Dataset | None) -> str | None:
    """A warning when evaluation images also appear in data a model learned from (given by
    role, e.g. `training=...`, `transfer=...`): its accuracy on them is optimistic."""
    shared = {role: eval_data.shared_with(d) for role, d in learned_from.items()
              if d is not None}
    shared = {role: count for role, count in shared.items() if count}
    if not shared:
        return None
    where = " and ".join(f"{count:,} in the {role} data" for role, count in shared.items())
    return (f"{where} of the {len(eval_data):,} evaluation images ({eval_data.source}) are "
            "also learned from: the accuracy on them is optimistic. Evaluate on images kept "
            "out of fine-tuning")


def _fingerprints(x: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in x]


def _shape_text(shape) -> str:
    h, w, c = shape
    return f"{h}x{w} with {c} channel{'s' if c != 1 else ''}"


def load(source, *, image_size: tuple[int, int] | None = None, channels: int = 3,
         samples: int | None = None, preprocess=None) -> Dataset:
    """Loads a dataset from an `.npz` file, an image folder, or `"shapes"` (built in).

    Args:
        source: path to an `.npz` (with `x` uint8 NHWC, optional `y` and `classes`), a
            folder with one sub-folder of images per class, or `"shapes"`.
        image_size: (height, width) to resize folder images and draw shapes at; a model's
            input size. Required for folders and shapes.
        channels: 3 (RGB) or 1 (grayscale), for folders and shapes.
        samples: how many shapes to draw (default 1000). Ignored for files.
        preprocess: how the images become the model's input (see `Dataset.with_preprocess`).

    Returns:
        A `Dataset`.

    Raises:
        DataError: the source is missing, unreadable or malformed.

    Example:
        >>> len(load("shapes", image_size=(16, 16), samples=20))
        20
    """
    return _load(source, image_size, channels, samples).with_preprocess(preprocess)


def _load(source, image_size, channels, samples) -> Dataset:
    if str(source) == BUILTIN:
        if image_size is None:
            raise OptionError("The built-in shapes need an image size.")
        return shapes(samples or 1000, size=image_size, channels=channels, seed=1)
    path = Path(source)
    if path.is_dir():
        if image_size is None:
            raise OptionError(f"Reading the image folder {path} needs an image size.")
        return load_folder(path, image_size=image_size, channels=channels)
    if not path.exists():
        raise DataError(f"Data `{path}` does not exist. Give an .npz file, an image folder "
                        f"or `{BUILTIN}`.")
    return load_npz(path)


def load_npz(path) -> Dataset:
    """Loads an `.npz` with `x` (uint8, NHWC or NHW), optional `y` and `classes`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"Cannot read `{path}`: {e.strerror}.") from None
    if magic[:4] != b"PK\x03\x04" and magic != b"\x93NUMPY":
        raise DataError(f"`{path}` is not an .npz archive (numpy.savez writes one; this file "
                        "starts with other bytes, e.g. text). Save images with "
                        "numpy.savez(path, x=images, y=labels).")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k in ("x", "y", "classes")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"Cannot read `{path}` as an .npz file: {e}.") from None
    if "x" not in arrays:
        raise DataError(f"`{path}` has no array `x`; found: {sorted(arrays) or 'none'}. "
                        "Save images as x (uint8, N x H x W x C).")
    x = _as_images(arrays["x"], path)
    y = _as_labels(arrays.get("y"), len(x), path)
    classes = arrays.get("classes")
    if classes is None:
        count = int(y.max()) + 1 if y is not None and len(y) else 0
        classes = tuple(str(i) for i in range(count))
    else:
        classes = tuple(str(c) for c in classes)
    if y is not None and len(y) and y.max() >= len(classes):
        raise DataError(f"`{path}` has label {int(y.max())} but only {len(classes)} classes.")
    return Dataset(x, y, classes, str(path))


def _as_images(x: np.ndarray, path) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DataError(f"`x` in `{path}` has shape {x.shape}; expected N x H x W x C.")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer) or x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"`x` in `{path}` is {x.dtype}; expected uint8 pixels 0-255.")
        x = x.astype(np.uint8)
    return x


def _as_labels(y, count: int, path) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != count or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"`y` in `{path}` has shape {y.shape} and type {y.dtype}; "
                        f"expected {count} integer labels.")
    if count and y.min() < 0:
        raise DataError(f"`y` in `{path}` has a negative label ({int(y.min())}).")
    return y.astype(np.int64)


def load_folder(path, *, image_size: tuple[int, int], channels: int = 3) -> Dataset:
    """Loads `path/<class>/<image>` files, sorted by class then file name, resized.

    A file that is not a readable image (a stray note, a thumbnail database) is skipped
    with one warning naming every such file."""
    path = Path(path)
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"Image folder `{path}` has {len(class_dirs)} class sub-folder(s); "
                        "it needs one sub-folder of images per class, at least two.")
    images, labels, skipped = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        for file in files:
            image = _read_image(file, image_size, channels)
            if image is None:
                skipped.append(file)
                continue
            images.append(image)
            labels.append(label)
        if label not in labels:
            raise DataError(f"Class folder `{class_dir}` has no images.")
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} file(s) that are not readable images: "
                      f"{', '.join(str(f) for f in skipped)}", stacklevel=2)
    x = np.stack(images)
    return Dataset(x, np.array(labels, np.int64), tuple(d.name for d in class_dirs), str(path))


def _read_image(file: Path, image_size, channels: int) -> np.ndarray | None:
    """The image resized, or None when the file is not a readable image."""
    try:
        with Image.open(file) as image:
            image = image.convert("RGB" if channels == 3 else "L")
            image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
            array = np.asarray(image, np.uint8)
    except (UnidentifiedImageError, OSError):
        return None
    return array.reshape(image_size[0], image_size[1], channels)


def shapes(n: int = 1000, *, size=(32, 32), channels: int = 3, seed: int = 0) -> Dataset:
    """The built-in dataset: coloured geometric shapes, 10 classes, deterministic by `seed`.

    Each image shows one shape (see `SHAPE_CLASSES`) of random colour, size and position on
    a random background, with a little pixel noise. Classes are balanced and interleaved.

    Args:
        n: images.
        size: (height, width).
        channels: 3 (colour) or 1.
        seed: the draw; the same seed gives the same images.

    Returns:
        A labelled `Dataset` of uint8 images (its preprocessing still to choose).

    Example:
        >>> ds = shapes(20, size=(16, 16)); ds.x.shape, ds.classes[:2]
        ((20, 16, 16, 3), ('circle', 'square'))
    """
    if n < 1:
        raise OptionError(f"`n` must be at least 1. Received: n={n}.")
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    scale = 4  # draw large, then downsample: smooth edges at any size
    images, labels = [], []
    for i in range(n):
        label = i % len(SHAPE_CLASSES)
        image = _draw_shape(SHAPE_CLASSES[label], width * scale, height * scale, rng)
        image = image.resize((width, height), Image.BOX)
        images.append(np.asarray(image, np.int16))
        labels.append(label)
    x = np.stack(images) + rng.integers(-8, 9, (n, height, width, 3))
    x = np.clip(x, 0, 255).astype(np.uint8)
    if channels == 1:
        x = np.round(x @ np.array([0.299, 0.587, 0.114]))[..., np.newaxis].astype(np.uint8)
    return Dataset(x, np.array(labels, np.int64), SHAPE_CLASSES, f"{BUILTIN}(seed={seed})")


def _draw_shape(kind: str, width: int, height: int, rng) -> Image.Image:
    background, colour = _contrasting_colours(rng)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    r = min(width, height) * rng.uniform(0.25, 0.4)
    cx = width / 2 + rng.uniform(-0.1, 0.1) * width
    cy = height / 2 + rng.uniform(-0.1, 0.1) * height
    t = max(1, r / 3)  # stroke thickness
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif kind == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif kind == "cross":
        draw.rectangle((cx - r, cy - t / 2, cx + r, cy + t / 2), fill=colour)
        draw.rectangle((cx - t / 2, cy - r, cx + t / 2, cy + r), fill=colour)
    elif kind == "ring":
        draw.ellipse(box, outline=colour, width=int(t))
    elif kind == "hbar":
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=colour)
    elif kind == "vbar":
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=colour)
    elif kind == "star":
        points = [(cx + (r if k % 2 == 0 else r / 2.5) * math.sin(k * math.pi / 5),
                   cy - (r if k % 2 == 0 else r / 2.5) * math.cos(k * math.pi / 5))
                  for k in range(10)]
        draw.polygon(points, fill=colour)
    else:  # frame
        draw.rectangle(box, outline=colour, width=int(t))
    return image


def _contrasting_colours(rng) -> tuple[tuple[int, ...], tuple[int, ...]]:
    while True:
        background = rng.integers(0, 256, 3)
        colour = rng.integers(0, 256, 3)
        if np.abs(background - colour).sum() > 200:
            return tuple(int(v) for v in background), tuple(int(v) for v in colour)
