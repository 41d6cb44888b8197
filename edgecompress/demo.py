"""The built-in demonstration: the whole flow on the shapes dataset in about a minute."""

from __future__ import annotations

from pathlib import Path

from . import _io, data, models, pipeline, report, tflite, train
from ._tf import keras

__all__ = ["run"]

IMAGE_SIZE = (32, 32)
PREPROCESS = "unit"


def run(out: Path, *, epochs: int = 8, train_samples: int = 2000, test_samples: int = 1000,
        verbose: int = 2, progress=_io.say) -> list[dict]:
    """Trains a tiny CNN on the built-in shapes, exports fp32 and int8 and evaluates both.

    Writes `model.keras`, `model_fp32.tflite`, `model_int8.tflite` and `report.json` in `out`.

    Args:
        out: an existing, writable folder.
        epochs: training epochs.
        train_samples, test_samples: shapes images to train on and to judge on.
        verbose: Keras' verbosity while training.
        progress: called with each line of progress and the results' table.

    Returns:
        One table row per file (bytes, accuracy, agreement, latency, speed-up).
    """
    out.mkdir(parents=True, exist_ok=True)
    train_set = data.shapes(train_samples, size=IMAGE_SIZE, seed=0)
    test_set = data.shapes(test_samples, size=IMAGE_SIZE, seed=1)
    progress(f"[1/3] training a tiny CNN on {len(train_set):,} built-in shape images ...")
    keras.utils.set_random_seed(0)
    model = models.tiny_cnn(IMAGE_SIZE + (3,), classes=len(train_set.classes),
                            filters=(16, 32, 32))
    train.fit(model, train_set, preprocess=PREPROCESS, epochs=epochs, verbose=verbose)
    models.save(model, out / "model.keras")
    reference = models.predict_labels(model, test_set, PREPROCESS)
    progress("[2/3] exporting fp32 and int8 ...")
    files = {mode: tflite.export(model, out / f"model_{mode}.tflite", mode=mode,
                                 data=train_set, preprocess=PREPROCESS)
             for mode in ("fp32", "int8")}
    progress(f"[3/3] evaluating both on {len(test_set):,} test images against the Keras model ...")
    results, rows = pipeline.judge(files, test_set, reference)
    keras_accuracy = float((reference == test_set.y).mean())
    progress(f"\nKeras model accuracy: {keras_accuracy:.2%}\n")
    progress(report.text_table(rows))
    report.write_json(out / "report.json", {
        "keras_accuracy": keras_accuracy, "train": train_set.source, "test": test_set.source,
        "results": {mode: r.to_json() for mode, r in results.items()}})
    progress(f"\nwrote {out / 'model_int8.tflite'} and {out / 'report.json'}")
    return rows
