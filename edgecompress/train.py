"""Fine-tuning: `model.fit` on a `Dataset`, with schedules, early stopping and strategies."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import numpy as np

from ._tf import keras, tf
from .data import Dataset, preprocess as preprocess_images, preprocess_scale
from .errors import OptionError
from .models import input_shape
from .options import STRATEGIES, LearningRate, lookup
from . import distill

__all__ = ["FitConfig", "StepReports", "fit", "strategy"]


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
        steps: optimizer steps to take instead of `epochs` (rounded up to whole epochs of
            equal length): on a small data set, epochs are too coarse a unit.
        augment: random horizontal flips and translations of up to 10 % (Keras
            preprocessing layers) on the training images.
    """

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-3
    schedule: str = "constant"
    patience: int = 0
    steps: int | None = None
    augment: bool = False

    def __post_init__(self):
        LearningRate.get(self.schedule, "schedule")
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 0:
            raise OptionError(f"epochs and patience must be >= 0 and batch_size >= 1. "
                              f"Received: epochs={self.epochs}, batch_size={self.batch_size}, "
                              f"patience={self.patience}.")
        if self.steps is not None and self.steps < 0:
            raise OptionError(f"`steps` must be >= 0. Received: steps={self.steps}.")
        if not self.learning_rate > 0:
            raise OptionError(f"`learning_rate` must be positive. Received: "
                              f"learning_rate={self.learning_rate}.")

    def batches_per_epoch(self, samples: int) -> int:
        """Full batches in one pass over `samples` images (a last partial batch is dropped)."""
        return max(1, samples // self.batch_size)

    def schedule_of(self, samples: int) -> tuple[int, int]:
        """(epochs, steps per epoch) for `samples` training images."""
        per_pass = self.batches_per_epoch(samples)
        if self.steps is None:
            return self.epochs, per_pass
        epochs = -(-self.steps // per_pass)
        return epochs, -(-self.steps // epochs) if epochs else per_pass

    def total_steps(self, samples: int) -> int:
        """Optimizer steps this configuration takes on `samples` training images: `steps`
        exactly when given (the last epoch is cut short where they do not divide)."""
        epochs, per_epoch = self.schedule_of(samples)
        return min(epochs * per_epoch, self.steps) if self.steps is not None else \
            epochs * per_epoch

    def describe(self, samples: int) -> str:
        epochs, per_epoch = self.schedule_of(samples)
        total = self.total_steps(samples)
        short = ", the last cut short" if total < epochs * per_epoch else ""
        return (f"{total} steps ({epochs} epoch(s) of {per_epoch} batches of "
                f"{self.batch_size}{short})" + (", augmented" if self.augment else ""))


def fit(model: keras.Model, data: Dataset, *, preprocess=None, config: FitConfig = FitConfig(),
        validation: Dataset | None = None, callbacks=(), strategy=None, seed: int = 0,
        verbose: int = 1, teacher: keras.Model | None = None, distill_config=None,
        transfer: Dataset | None = None, **overrides) -> keras.callbacks.History:
    """Trains `model` in place on `data` with Adam and sparse categorical cross-entropy.

    Batches are full: the last partial batch of each shuffled pass is left out. A partial
    last batch was seen to crash TensorFlow 2.21's oneDNN kernels in distillation (exit 139,
    on 4,085 images at batch 64); it did not reproduce on every CPU.

    Args:
        model: a Keras classifier with softmax output (built under `strategy.scope()` when
            a strategy is given).
        data: labelled training images.
        preprocess: a `Preprocess` name; by default the dataset's own.
        config: a `FitConfig`; keyword `overrides` (epochs=..., learning_rate=...) replace
            its fields.
        validation: labelled images evaluated after each epoch (early stopping uses them).
        callbacks: extra Keras callbacks (e.g. pruning's step counter).
        strategy: a `tf.distribute.Strategy`, e.g. `MirroredStrategy()`.
        seed: shuffling, augmentation and initialisation seed.
        verbose: Keras progress output (0 silent, 1 bar, 2 a line per epoch).
        teacher: when given, `model` learns by distillation from this frozen model
            (`distill`), with `distill_config` (a `distill.Config`).
        transfer: extra images learned only through the teacher's outputs (their labels,
            if any, are ignored); needs `teacher`.

    Returns:
        The Keras `History`.

    Example:
        >>> fit(model, data.shapes(2000, size=(32, 32)), preprocess="unit", epochs=5)
        ... # doctest: +SKIP
    """
    config = dataclasses.replace(config, **overrides)
    how = data.resolve(preprocess)
    data.check_fits(input_shape(model))
    data.require_labels()
    if transfer is not None:
        if teacher is None:
            raise OptionError("Transfer images are learned only through a teacher's outputs: "
                              "give a teacher (distillation) or leave the transfer data out.")
        transfer.check_fits(input_shape(model))
    keras.utils.set_random_seed(seed)
    trainer, teacher_was_trainable = model, teacher is not None and teacher.trainable
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        optimizer = keras.optimizers.Adam(_learning_rate(config, _samples(data, transfer)))
        if teacher is None:
            model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
        else:
            trainer = distill.Distiller(student=model, teacher=teacher,
                                        config=distill_config or distill.Config())
            # weighted: the accuracy of labelled images only (Keras' plain `metrics` ignore
            # the sample weights that leave transfer images out)
            trainer.compile(optimizer=optimizer, weighted_metrics=["accuracy"])
    val = None
    if validation is not None:
        val = (preprocess_images(validation.x, how), validation.require_labels())
    epochs, per_epoch = config.schedule_of(_samples(data, transfer))
    total = config.total_steps(_samples(data, transfer))
    stop = [_StopAfter(total)] if total < epochs * per_epoch else []
    try:
        return trainer.fit(_batches(data, transfer, config, how, seed), epochs=epochs,
                           steps_per_epoch=per_epoch, validation_data=val, verbose=verbose,
                           callbacks=list(callbacks) + _early_stopping(config, val) + stop)
    finally:
        if teacher is not None:  # frozen for the distillation only, not for the caller
            teacher.trainable = teacher_was_trainable


class _StopAfter(keras.callbacks.Callback):
    """Ends training after exactly `steps` optimizer steps, within an epoch (counted by
    the optimizer, which a resumed stage restores)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) >= self.steps:
            self.model.stop_training = True


class StepReports(keras.callbacks.Callback):
    """Calls `report(step, model)` after each of the optimizer steps `at`, counted over
    every fit it is given to in turn (a recipe's stages one after another); `model` is the
    model being trained (a distiller's student). `report` may raise to end the training.

    Example:
        >>> recipe.run(model, stages, data, callbacks=[StepReports([100, 200], print)])
        ... # doctest: +SKIP
    """

    def __init__(self, at, report):
        super().__init__()
        self.at, self.report, self.step = set(at), report, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step in self.at:
            self.report(self.step, getattr(self.model, "student", self.model))


def _samples(data: Dataset, transfer: Dataset | None) -> int:
    return len(data) + (len(transfer) if transfer is not None else 0)


def _batches(data: Dataset, transfer: Dataset | None, config: FitConfig, how, seed: int):
    """Shuffled full batches of (preprocessed images, labels), repeated without end.

    Transfer images get the label -1, which the distillation loss leaves out of its
    hard-label term.
    """
    x, y = data.x, data.require_labels()
    if transfer is not None:
        x = np.concatenate([x, transfer.x])
        y = np.concatenate([y, np.full(len(transfer), distill.NO_LABEL, y.dtype)])
    divisor, offset = preprocess_scale(how)
    batch_size = min(config.batch_size, len(x))
    images = tf.data.Dataset.from_tensor_slices((x, y))
    images = images.shuffle(min(len(x), 1 << 16), seed=seed, reshuffle_each_iteration=True)
    images = images.batch(batch_size, drop_remainder=True).repeat()
    images = images.map(lambda xb, yb: (tf.cast(xb, tf.float32) / divisor + offset, yb))
    if config.augment:
        augment = _augmentation(seed)
        images = images.map(lambda xb, yb: (augment(xb, training=True), yb))
    return images.prefetch(2)


def _augmentation(seed: int) -> keras.Sequential:
    """Random horizontal flips and translations of up to 10 % (reflected at the edges)."""
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 1)])


def _learning_rate(config: FitConfig, samples: int):
    if LearningRate.get(config.schedule, "schedule") is LearningRate.COSINE:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                      max(1, config.total_steps(samples)))
    return config.learning_rate


def _early_stopping(config: FitConfig, validation) -> list:
    if not config.patience:
        return []
    if validation is None:
        raise OptionError("Early stopping (patience > 0) needs validation data.")
    return [keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True)]


def strategy(name: str):
    """A `tf.distribute.Strategy` by name (`none` gives None).

    `multiworker` reads the cluster from the `TF_CONFIG` environment variable, as
    TensorFlow documents.
    """
    make = lookup(dict(zip(STRATEGIES, (lambda: None, tf.distribute.MirroredStrategy,
                                        tf.distribute.MultiWorkerMirroredStrategy))),
                  name, "strategy")
    return make()
