"""Knowledge distillation (Hinton et al., 2015): a student learns from a frozen teacher.

The loss is `alpha * cross-entropy(labels, student) + (1 - alpha) * T^2 *
KL(teacher_T || student_T)`, where `_T` are the softmax outputs at temperature T. Images
labelled `NO_LABEL` (transfer images) count in the second term only. Both
models may end in a softmax: `log(p)` is the logits up to a per-example constant, which
softmax ignores, so the tempered distributions are exact.

With `features` > 0 the student also matches the teacher's feature maps at the end of each
spatial resolution (the stage outputs of a CNN, as in FitNets, Romero et al. 2015, and
attention transfer, Zagoruyko & Komodakis 2017): `features * mean over those maps of
|student - teacher|^2 / |teacher|^2`. Each image then teaches thousands of numbers instead
of ten, which helps when fine-tuning images are few. Only the maps the student still has
under the teacher's layer name and shape are matched: all of them in a pruned, clustered or
quantisation-aware student, some or none in a channel-pruned one (none is an error).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._tf import keras, tf
from .errors import OptionError

__all__ = ["NO_LABEL", "Config", "stage_outputs", "feature_models", "Distiller"]

NO_LABEL = -1  # an image learned only through the teacher's outputs


@dataclass(frozen=True)
class Config:
    """Distillation settings: `temperature` > 0 and the hard-label weight `alpha` in [0, 1]."""

    temperature: float = 4.0
    alpha: float = 0.1
    features: float = 0.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise OptionError(f"`temperature` must be positive. Received: "
                              f"temperature={self.temperature}.")
        if not 0 <= self.alpha <= 1:
            raise OptionError(f"`alpha` must be in [0, 1]. Received: alpha={self.alpha}.")
        if not self.features >= 0:
            raise OptionError(f"`features` must be >= 0. Received: features={self.features}.")


def _log_probabilities(outputs):
    return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0))


def stage_outputs(model: keras.Model) -> list[str]:
    """Names of the last layer with a 4-D output at each spatial resolution of `model`
    (above 1x1: a globally pooled vector is the classifier's input, not a map)."""
    last = {}
    for layer in model.layers:
        shape = layer.output_shape
        if isinstance(shape, tuple) and len(shape) == 4 and shape[1:3] != (1, 1):
            last[shape[1:3]] = layer.name
    return list(last.values())


def _layer_named(model: keras.Model, name: str):
    """The layer `name` of `model`, or the wrapper (pruning, QAT, clustering) around it."""
    for layer in model.layers:
        if name in (layer.name, getattr(getattr(layer, "layer", None), "name", None)):
            return layer
    return None


def _output_in(model: keras.Model, layer):
    # tfmot's clones reuse the layers they do not wrap, so a layer can belong to several
    # graphs: take its output in this model's
    for index in range(len(layer.inbound_nodes)):
        if f"{layer.name}_ib-{index}" in model._network_nodes:
            return layer.get_output_at(index)
    raise OptionError(f"Layer {layer.name!r} is not part of model {model.name!r}.")


def feature_models(student: keras.Model, teacher: keras.Model):
    """(student, teacher) models that output the paired stage feature maps, then the
    predictions; `OptionError` when the student has none of the teacher's maps."""
    pairs = []
    for name in stage_outputs(teacher):
        layer, original = _layer_named(student, name), teacher.get_layer(name)
        if layer is not None and layer.output_shape == original.output_shape:
            pairs.append((_output_in(student, layer), _output_in(teacher, original)))
    if not pairs:
        raise OptionError("Feature matching needs a student with the teacher's feature maps "
                          f"({', '.join(stage_outputs(teacher)) or 'none found'}); this one "
                          "has none of the same name and shape (a channel-pruned or new "
                          "student?). Set features=0.")
    student_maps, teacher_maps = zip(*pairs)
    return (keras.Model(student.inputs, [*student_maps, *student.outputs]),
            keras.Model(teacher.inputs, [*teacher_maps, *teacher.outputs]))


def _feature_loss(student_maps, teacher_maps):
    distances = [tf.reduce_mean(tf.square(s - t)) / (tf.reduce_mean(tf.square(t)) + 1e-6)
                 for s, t in zip(student_maps, teacher_maps)]
    return tf.add_n(distances) / len(distances)


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
        self.maps = feature_models(student, teacher) if config.features > 0 else None
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

    def _total_loss(self, x, y, training):
        if self.maps is None:
            student_outputs = self.student(x, training=training)
            return self._loss(y, student_outputs, self.teacher(x, training=False)), \
                student_outputs
        *student_maps, student_outputs = self.maps[0](x, training=training)
        *teacher_maps, teacher_outputs = self.maps[1](x, training=False)
        loss = self._loss(y, student_outputs, teacher_outputs)
        return loss + self.config.features * _feature_loss(student_maps, teacher_maps), \
            student_outputs

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss, student_outputs = self._total_loss(x, y, training=True)
            loss += sum(self.student.losses)  # the student's regularisers
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._update_metrics(loss, y, student_outputs)

    def test_step(self, data):
        x, y = data
        loss, student_outputs = self._total_loss(x, y, training=False)
        return self._update_metrics(loss, y, student_outputs)

    def _update_metrics(self, loss, y, student_outputs):
        self.loss_tracker.update_state(loss)
        self.compiled_metrics.update_state(tf.maximum(y, 0), student_outputs,
                                           sample_weight=_labelled(y))
        return {m.name: m.result() for m in self.metrics}
