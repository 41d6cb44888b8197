"""Distillation (`distill`): the teacher frozen and called once per batch, a student that
learns from it alone, and the configuration's errors."""

import numpy as np
import pytest

from edgecompress import data, distill, models, train
from edgecompress._tf import keras
from edgecompress.errors import OptionError


class _CountCalls(keras.layers.Layer):
    """Identity that counts how often it runs (in graph mode too)."""

    def build(self, shape):
        self.calls = self.add_weight(name="calls", shape=(), initializer="zeros",
                                     trainable=False)

    def call(self, x):
        self.calls.assign_add(1.0)
        return x


def test_distillation_freezes_the_teacher_and_calls_it_once_per_batch(trained, train_set):
    teacher_core = trained[0]
    inputs = keras.Input((16, 16, 3))
    counter = _CountCalls()
    teacher = keras.Model(inputs, teacher_core(counter(inputs)))
    before = [w.copy() for w in teacher_core.get_weights()]
    pupil = models.tiny_cnn((16, 16, 3), filters=(4, 8))
    history = train.fit(pupil, train_set.take(128), preprocess="unit", epochs=2,
                        batch_size=32, learning_rate=1e-2, verbose=0, teacher=teacher,
                        distill_config=distill.Config(temperature=2.0, alpha=0.5))
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher_core.get_weights()))
    assert teacher.trainable and teacher_core.trainable  # frozen only while distilling
    assert float(counter.calls.numpy()) == 2 * 128 / 32  # epochs x batches
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_distilled_student_learns_from_the_teacher(trained, train_set, test_set):
    pupil = models.tiny_cnn((16, 16, 3), filters=(8, 16))
    train.fit(pupil, train_set, preprocess="unit", epochs=4, learning_rate=1e-2, verbose=0,
              teacher=trained[0], distill_config=distill.Config(alpha=0.0))
    x = data.preprocess(test_set.x, "unit")
    agreement = np.mean(pupil.predict_on_batch(x).argmax(1) ==
                        trained[0].predict_on_batch(x).argmax(1))
    assert agreement > 0.5  # labels unused (alpha 0): all it knows came from the teacher


def test_distiller_freezes_its_teacher(trained):
    teacher = models.tiny_cnn((16, 16, 3))
    distiller = distill.Distiller(student=models.tiny_cnn((16, 16, 3)), teacher=teacher)
    assert not teacher.trainable and distiller.student.trainable
    assert not set(map(id, distiller.trainable_weights)) & set(map(id, teacher.weights))


def test_distillation_config_and_shape_errors(trained):
    with pytest.raises(OptionError, match="temperature"):
        distill.Config(temperature=0)
    with pytest.raises(OptionError, match="alpha"):
        distill.Config(alpha=1.5)
    with pytest.raises(OptionError, match="output"):
        distill.Distiller(student=models.tiny_cnn((16, 16, 3), classes=3), teacher=trained[0])
