"""Fine-tuning: `model.fit` on a `Dataset`, with schedules, early stopping and strategies."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

from ._tf import keras, tf
from .data import Dataset, preprocess as preprocess_images
from .errors import OptionError
from .models import input_shape
from .options import Choice, Preprocess
from .techniques import distill


class LearningRate(Choice):
    """Learning-rate schedule over the fine-tuning steps."""

    CONSTANT = "constant"
    COSINE = "cosine"  # cosine decay to zero over all steps


@dataclass(frozen=True)
class FitConfig:
    """How one stage is fine-tuned.

    Args:
        epochs: passes over the training data (0 skips training).
        batch_size: global batch size (split across replicas under a strategy).
        learning_rate: Adam's initial learning rate.
        schedule: `constant` or `cosine`.
        patience: stop after this many epochs without a better validation loss, and keep
            the best weights (needs validation data); 0 never stops early.
    """

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-3
    schedule: str = "constant"
    patience: int = 0

    def __post_init__(self):
        LearningRate.get(self.schedule)
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 0:
            raise OptionError(f"epochs and patience must be >= 0 and batch_size >= 1. "
                              f"Received: epochs={self.epochs}, batch_size={self.batch_size}, "
                              f"patience={self.patience}.")
        if not self.learning_rate > 0:
            raise OptionError(f"`learning_rate` must be positive. Received: "
                              f"learning_rate={self.learning_rate}.")

    def steps(self, samples: int) -> int:
        """Optimizer steps this configuration takes on `samples` training images."""
        return self.epochs * -(-samples // self.batch_size)


def fit(model: keras.Model, data: Dataset, *, preprocess="raw", config: FitConfig = FitConfig(),
        validation: Dataset | None = None, callbacks=(), strategy=None, seed: int = 0,
        verbose: int = 1, teacher: keras.Model | None = None, distill_config=None,
        **overrides) -> keras.callbacks.History:
    """Trains `model` in place on `data` with Adam and sparse categorical cross-entropy.

    Args:
        model: a Keras classifier with softmax output (built under `strategy.scope()` when
            a strategy is given).
        data: labelled training images.
        preprocess: a `Preprocess` name.
        config: a `FitConfig`; keyword `overrides` (epochs=..., learning_rate=...) replace
            its fields.
        validation: labelled images evaluated after each epoch (early stopping uses them).
        callbacks: extra Keras callbacks (e.g. pruning's step counter).
        strategy: a `tf.distribute.Strategy`, e.g. `MirroredStrategy()`.
        seed: shuffling and initialisation seed.
        verbose: Keras progress output (0 silent, 1 bar, 2 a line per epoch).
        teacher: when given, `model` learns by distillation from this frozen model
            (`techniques.distill`), with `distill_config` (a `distill.Config`).

    Returns:
        The Keras `History`.

    Example:
        >>> fit(model, data.shapes(2000, size=(32, 32)), preprocess="unit", epochs=5)
        ... # doctest: +SKIP
    """
    config = dataclasses.replace(config, **overrides)
    how = Preprocess.get(preprocess)
    data.check_fits(input_shape(model))
    keras.utils.set_random_seed(seed)
    trainer, teacher_was_trainable = model, teacher is not None and teacher.trainable
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        optimizer = keras.optimizers.Adam(_learning_rate(config, len(data)))
        if teacher is None:
            model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
        else:
            trainer = distill.Distiller(student=model, teacher=teacher,
                                        config=distill_config or distill.Config())
            trainer.compile(optimizer=optimizer, metrics=["accuracy"])
    val = None
    if validation is not None:
        val = (preprocess_images(validation.x, how), validation.require_labels())
    try:
        return trainer.fit(preprocess_images(data.x, how), data.require_labels(),
                           batch_size=config.batch_size, epochs=config.epochs,
                           validation_data=val, shuffle=True, verbose=verbose,
                           callbacks=list(callbacks) + _early_stopping(config, val))
    finally:
        if teacher is not None:  # frozen for the distillation only, not for the caller
            teacher.trainable = teacher_was_trainable


def _learning_rate(config: FitConfig, samples: int):
    if LearningRate.get(config.schedule) is LearningRate.COSINE:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                      max(1, config.steps(samples)))
    return config.learning_rate


def _early_stopping(config: FitConfig, validation) -> list:
    if not config.patience:
        return []
    if validation is None:
        raise OptionError("Early stopping (patience > 0) needs validation data.")
    return [keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True)]


STRATEGIES = ("none", "mirrored", "multiworker")


def strategy(name: str):
    """A `tf.distribute.Strategy` by name (`none` gives None).

    `multiworker` reads the cluster from the `TF_CONFIG` environment variable, as
    TensorFlow documents.
    """
    if name not in STRATEGIES:
        raise OptionError(f"Unknown strategy {name!r}. Choose one of: {', '.join(STRATEGIES)}.")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None
