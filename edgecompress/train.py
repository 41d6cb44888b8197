"""Fine-tuning: `model.fit` on a `Dataset` with a named preprocessing."""

from __future__ import annotations

from ._tf import keras
from .data import Dataset, preprocess as preprocess_images
from .models import input_shape
from .options import Preprocess


def fit(model: keras.Model, data: Dataset, *, preprocess="raw", epochs: int = 1,
        batch_size: int = 32, learning_rate: float = 1e-3, validation: Dataset | None = None,
        callbacks=(), seed: int = 0, verbose: int = 1) -> keras.callbacks.History:
    """Trains `model` in place on `data` with Adam and sparse categorical cross-entropy.

    Args:
        model: a Keras classifier with softmax output.
        data: labelled training images.
        preprocess: a `Preprocess` name.
        epochs, batch_size, learning_rate: the usual.
        validation: labelled images evaluated after each epoch.
        callbacks: extra Keras callbacks (e.g. tfmot's `UpdatePruningStep`).
        seed: shuffling and initialisation seed.
        verbose: Keras progress output (0 silent, 1 bar, 2 a line per epoch).

    Returns:
        The Keras `History`.
    """
    how = Preprocess.get(preprocess)
    data.check_fits(input_shape(model))
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = preprocess_images(data.x, how)
    val = None if validation is None else (preprocess_images(validation.x, how),
                                           validation.require_labels())
    return model.fit(x, data.require_labels(), batch_size=batch_size, epochs=epochs,
                     validation_data=val, callbacks=list(callbacks), shuffle=True,
                     verbose=verbose)

