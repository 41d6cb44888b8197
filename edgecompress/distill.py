"""Knowledge distillation (Hinton et al., 2015): a student learns from a frozen teacher.

The loss is `alpha * cross-entropy(labels, student) + (1 - alpha) * T^2 *
KL(teacher_T || student_T)`, where `_T` are the softmax outputs at temperature T. Images
labelled `NO_LABEL` (transfer images) count in the second term only. Both
models may end in a softmax: `log(p)` is the logits up to a per-example constant, which
softmax ignores, so the tempered distributions are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._tf import keras, tf
from .errors import OptionError

NO_LABEL = -1  # an image learned only through the teacher's outputs


@dataclass(frozen=True)
class Config:
    """Distillation settings: `temperature` > 0 and the hard-label weight `alpha` in [0, 1]."""

    temperature: float = 4.0
    alpha: float = 0.1

    def __post_init__(self):
        if not self.temperature > 0:
            raise OptionError(f"`temperature` must be positive. Received: "
                              f"temperature={self.temperature}.")
        if not 0 <= self.alpha <= 1:
            raise OptionError(f"`alpha` must be in [0, 1]. Received: alpha={self.alpha}.")


def _log_probabilities(outputs):
    return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0))


def _labelled(y):
    return tf.cast(tf.not_equal(tf.reshape(y, [-1]), NO_LABEL), tf.float32)


class Distiller(keras.Model):
    """A Keras trainer: fitting it trains `student` (in place) against a frozen `teacher`.

    Example:
        >>> distiller = Distiller(student=small, teacher=big, config=Config())
        >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-3),
        ...                   weighted_metrics=["accuracy"])
        >>> distiller.fit(x, y, epochs=5)  # doctest: +SKIP
    """

    def __init__(self, *, student: keras.Model, teacher: keras.Model,
                 config: Config = Config(), **kwargs):
        super().__init__(**kwargs)
        if student.output_shape != teacher.output_shape:
            raise OptionError(f"The student's output {student.output_shape} differs from the "
                              f"teacher's {teacher.output_shape}.")
        self.student, self.teacher, self.config = student, teacher, config
        self.teacher.trainable = False
        self.soft_loss = keras.losses.KLDivergence()
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker] + self.compiled_metrics.metrics

    def call(self, x, training=False):
        return self.student(x, training=training)

    def _loss(self, y, student_outputs, teacher_outputs):
        t = self.config.temperature
        soft_teacher = tf.nn.softmax(_log_probabilities(teacher_outputs) / t)
        soft_student = tf.nn.softmax(_log_probabilities(student_outputs) / t)
        soft = self.soft_loss(soft_teacher, soft_student) * t * t
        labelled = _labelled(y)
        per_image = keras.losses.sparse_categorical_crossentropy(
            tf.maximum(y, 0), student_outputs)
        hard = tf.reduce_sum(per_image * labelled) / tf.maximum(tf.reduce_sum(labelled), 1.0)
        return self.config.alpha * hard + (1 - self.config.alpha) * soft

    def train_step(self, data):
        x, y = data
        teacher_outputs = self.teacher(x, training=False)  # once per batch
        with tf.GradientTape() as tape:
            student_outputs = self.student(x, training=True)
            loss = self._loss(y, student_outputs, teacher_outputs)
            loss += sum(self.student.losses)  # the student's regularisers
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._update_metrics(loss, y, student_outputs)

    def test_step(self, data):
        x, y = data
        student_outputs = self.student(x, training=False)
        loss = self._loss(y, student_outputs, self.teacher(x, training=False))
        return self._update_metrics(loss, y, student_outputs)

    def _update_metrics(self, loss, y, student_outputs):
        self.loss_tracker.update_state(loss)
        self.compiled_metrics.update_state(tf.maximum(y, 0), student_outputs,
                                           sample_weight=_labelled(y))
        return {m.name: m.result() for m in self.metrics}
