"""Structured pruning: remove whole filters, rebuilding a smaller dense model.

Channels are grouped by what must stay equal: the outputs of layers joined by an `Add`
(a residual connection) are one group and are pruned together; BatchNormalization,
activations, pooling and depthwise convolutions pass their input's channels through. A
group is pruned when every layer that produces it is a Conv2D or Dense; groups that reach
the model's input or output, or pass through a layer not understood here, keep all their
channels. Unlike magnitude pruning, the kernels really shrink, so the file gets smaller
and faster on every runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._tf import keras, tf
from ..errors import OptionError
from ..options import Choice, Criterion
from . import _graph, _layers

__all__ = ["Scope", "Config", "Group", "analyse", "plan", "apply", "strip", "describe", "summary"]

PASS_THROUGH = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU",
                "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
                "GlobalMaxPooling2D", "Dropout", "ZeroPadding2D", "Rescaling", "Softmax",
                "SpatialDropout2D")
MERGE = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
PRODUCERS = ("Conv2D", "Dense")


class Scope(Choice):
    """How the pruning ratio is shared out."""

    LAYER = "layer"  # every group loses `ratio` of its channels
    GLOBAL = "global"  # the least important channels of the whole model, by normalised score


@dataclass(frozen=True)
class Config:
    """Structured pruning settings.

    Args:
        ratio: fraction of channels to remove, in [0, 1).
        criterion: `l1`, `l2` or `bn`.
        scope: `layer` or `global`.
        divisor: keep a multiple of this many channels per group (hardware likes 4 or 8).
        exclude: names of layers whose output channels are kept.
        ratios: ratio per layer name, overriding `ratio` for the group of that layer
            (`layer` scope only).
        reconstruct: refit every layer that reads removed channels, by least squares on
            sample images, to reproduce the original layer's outputs from the channels
            kept (He, Zhang and Sun 2017; Luo, Wu and Lin 2017, ThiNet). A better start
            for short fine-tuning; `apply` then needs `images`.
    """

    ratio: float = 0.25
    criterion: str = "l1"
    scope: str = "layer"
    divisor: int = 1
    exclude: tuple[str, ...] = ()
    ratios: dict = field(default_factory=dict)
    reconstruct: bool = False

    def __post_init__(self):
        Criterion.get(self.criterion, "criterion")
        if Scope.get(self.scope, "scope") is Scope.GLOBAL and self.ratios:
            raise OptionError("Per-layer `ratios` need scope='layer'; the global scope "
                              "ranks all channels together.")
        for name, ratio in {"ratio": self.ratio, **self.ratios}.items():
            if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
                raise OptionError(f"Ratio for {name} must be in [0, 1). Received: {ratio!r}.")
        if self.divisor < 1:
            raise OptionError(f"`divisor` must be at least 1. Received: divisor={self.divisor}.")


@dataclass
class Group:
    """Layers whose output channels must stay equal, and which of them are kept."""

    members: list[str]
    producers: list[str]
    channels: int
    fixed_by: str = ""  # why the group cannot be pruned, or ""
    keep: np.ndarray | None = None


class _Groups:
    """Union-find over layer names: the channel groups of a model."""

    def __init__(self):
        self.parent: dict[str, str] = {}
        self.fixed: dict[str, str] = {}

    def find(self, name: str) -> str:
        self.parent.setdefault(name, name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb
            if ra in self.fixed:
                self.fixed.setdefault(rb, self.fixed[ra])

    def fix(self, name: str, why: str) -> None:
        self.fixed.setdefault(self.find(name), why)


def analyse(model: keras.Model, config: Config = Config()) -> list[Group]:
    """The channel groups of `model` and whether each can be pruned (before `keep` is set)."""
    _layers.check_layer_names(model, (*config.exclude, *config.ratios))
    sources = _graph.inbound(model)
    groups = _Groups()
    for layer in model.layers:
        kind, name, inputs = type(layer).__name__, layer.name, sources[layer.name]
        groups.find(name)
        if kind == "InputLayer":
            groups.fix(name, "the model's input")
        elif kind in PRODUCERS:
            if name in config.exclude:
                groups.fix(name, "excluded by the configuration")
        elif kind == "DepthwiseConv2D" and layer.depth_multiplier == 1 or kind in PASS_THROUGH:
            groups.union(name, inputs[0])
        elif kind in MERGE:
            for source in inputs:
                groups.union(name, source)
        elif kind == "Flatten" and len(layer.input_shape) == 4:
            continue  # the Dense that reads it maps channels through the flattening
        else:
            for source in inputs:
                groups.fix(source, f"read by {name} ({kind})")
            groups.fix(name, f"written by {name} ({kind})")
    for name in _graph._layer_names(model.get_config()["output_layers"]):
        groups.fix(name, "the model's output")
    return _collect(model, groups)


def _collect(model, groups: _Groups) -> list[Group]:
    by_root: dict[str, Group] = {}
    for layer in model.layers:
        if type(layer).__name__ == "Flatten":
            continue
        root = groups.find(layer.name)
        shape = layer.output_shape[0] if isinstance(layer.output_shape, list) else \
            layer.output_shape
        group = by_root.setdefault(root, Group([], [], int(shape[-1])))
        group.members.append(layer.name)
        if type(layer).__name__ in PRODUCERS:
            group.producers.append(layer.name)
    for root, group in by_root.items():
        group.fixed_by = groups.fixed.get(root, "" if group.producers else "no Conv2D/Dense")
    return list(by_root.values())


def _importance(model, group: Group, criterion: Criterion) -> np.ndarray:
    """One score per channel, each producer's scores normalised to a maximum of 1."""
    total = np.zeros(group.channels)
    bn_gamma = {layer.name: np.abs(layer.gamma.numpy()) for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization) and layer.scale
                and layer.name in group.members}
    for name in group.producers:
        kernel = model.get_layer(name).get_weights()[0]
        flat = kernel.reshape(-1, kernel.shape[-1])
        scores = np.sqrt((flat ** 2).sum(0)) if criterion is Criterion.L2 else \
            np.abs(flat).sum(0)
        total += scores / (scores.max() or 1.0)
    if criterion is Criterion.BN and bn_gamma:
        total = sum(g / (g.max() or 1.0) for g in bn_gamma.values())
    return total


def plan(model: keras.Model, config: Config = Config()) -> list[Group]:
    """The groups of `model` with the channels each keeps (`keep`, sorted indices)."""
    criterion = Criterion.get(config.criterion, "criterion")
    scope = Scope.get(config.scope, "scope")
    groups = analyse(model, config)
    prunable = [g for g in groups if not g.fixed_by]
    scores = {id(g): _importance(model, g, criterion) for g in prunable}
    threshold = None
    if scope is Scope.GLOBAL and prunable:
        everything = np.concatenate([s / (s.max() or 1.0) for s in scores.values()])
        threshold = np.quantile(everything, config.ratio) if config.ratio else -np.inf
    for group in groups:
        if group.fixed_by:
            named = [m for m in group.members if config.ratios.get(m)]
            if named:
                raise OptionError(f"Cannot prune {', '.join(named)}: its channels are fixed "
                                  f"({group.fixed_by}).")
            group.keep = np.arange(group.channels)
            continue
        score = scores[id(group)]
        if threshold is None:
            count = group.channels - int(round(_ratio(group, config) * group.channels))
        else:
            count = int(np.sum(score / (score.max() or 1.0) > threshold))
        count = min(group.channels, max(config.divisor, -(-count // config.divisor) *
                                        config.divisor))
        group.keep = np.sort(np.argsort(-score, kind="stable")[:count])
    return groups


def _ratio(group: Group, config: Config) -> float:
    """The group's ratio: one named in `config.ratios` by a member, else `config.ratio`."""
    named = [m for m in group.members if m in config.ratios]
    ratios = {config.ratios[m] for m in named}
    if len(ratios) > 1:
        raise OptionError(f"Layers {', '.join(named)} share their channels (one group) but "
                          f"were given different ratios: {sorted(ratios)}.")
    return ratios.pop() if ratios else config.ratio


def apply(model: keras.Model, config: Config = Config(), images: np.ndarray | None = None
          ) -> keras.Model:
    """Removes the least important channels of each channel group and rebuilds the model.

    Args:
        model: a tf_keras model.
        config: the share to remove (or per-group ratios), the importance criterion, its
            scope, a channel divisor and exclusions.
        images: model input (preprocessed), for `config.reconstruct` only.

    Returns:
        A smaller model, the kept channels' weights copied in.

    Raises:
        OptionError: bad configuration or an unknown excluded layer name.
        ModelError: a model this rebuild does not handle (shared layers, nested models).

    Example:
        >>> smaller = apply(model, Config(ratio=0.5, criterion="l1"))  # doctest: +SKIP
    """
    if config.reconstruct and images is None:
        raise OptionError("Reconstruction after removal refits layers on sample images: "
                          "give `images` (model input).")
    groups = plan(model, config)
    keep = {name: g.keep for g in groups for name in g.members}
    sources = _graph.inbound(model)

    def input_keep(layer):
        source = model.get_layer(sources[layer.name][0])
        if type(source).__name__ == "Flatten":  # channels-last flattening: (h, w, c)
            inner = model.get_layer(sources[source.name][0])
            spatial = int(np.prod(inner.output_shape[1:3]))
            c = inner.output_shape[-1]
            return (np.arange(spatial)[:, None] * c + keep[inner.name][None, :]).ravel()
        return keep[source.name]

    pruned = _graph.rebuild(model, lambda layer: _sliced(layer, keep, input_keep))
    if config.reconstruct:
        _reconstruct(model, pruned, keep, images)
    return pruned


def strip(model: keras.Model) -> keras.Model:
    """The model itself: `apply` builds a plain, smaller model with no wrappers."""
    return model


def describe(config: Config) -> str:
    return f"removing {config.ratio:.0%} of channels ({config.criterion}, {config.scope}" + \
        "".join(f", {name} {100 * ratio:g}%" for name, ratio in config.ratios.items()) + ")"


def _sliced(layer, keep, input_keep):
    kind = type(layer).__name__
    if kind not in PRODUCERS + ("BatchNormalization", "DepthwiseConv2D"):
        return None
    weights, config = layer.get_weights(), layer.get_config()
    out = keep[layer.name]
    if kind in PRODUCERS:
        rows = input_keep(layer)
        kernel = weights[0][..., rows, :][..., out]
        weights = [kernel] + [w[out] for w in weights[1:]]
        config["units" if kind == "Dense" else "filters"] = len(out)
    else:  # BatchNormalization and DepthwiseConv2D follow their input's channels
        if kind == "DepthwiseConv2D":
            weights = [weights[0][:, :, out, :]] + [w[out] for w in weights[1:]]
        else:
            weights = [w[out] for w in weights]
    new_layer = layer.__class__.from_config(config)

    def build(x):
        y = new_layer(x)
        new_layer.set_weights(weights)
        return y

    return build


def _reconstruct(original, pruned, keep, images, batch_size: int = 100) -> None:
    """Refits, in layer order, each Conv2D/Dense of `pruned` that reads fewer channels than
    in `original`: least squares from its input in `pruned` (after the refits before it) to
    the original layer's linear output (before any fused activation), kept channels only."""
    for layer in filter(_refittable, pruned.layers):
        before = original.get_layer(layer.name)
        if layer.kernel.shape[-2] == before.kernel.shape[-2]:
            continue
        out = keep[layer.name]
        kernel = before.kernel.numpy().reshape(-1, before.kernel.shape[-1])[:, out]
        bias = before.bias.numpy()[out] if before.use_bias else 0.0
        gram = cross = 0.0
        for full, kept in zip(_inputs(original, before, images, batch_size),
                              _inputs(pruned, layer, images, batch_size)):
            target = _rows(before, full) @ kernel + bias
            x = _rows(layer, kept).astype(np.float64)
            if layer.use_bias:
                x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
            gram, cross = gram + x.T @ x, cross + x.T @ target
        ridge = 1e-6 * np.trace(gram) / len(gram)  # a dead channel leaves it singular
        solution = np.linalg.solve(gram + ridge * np.eye(len(gram)), cross).astype(np.float32)
        rows = int(np.prod(layer.kernel.shape[:-1]))
        layer.set_weights([solution[:rows].reshape(layer.kernel.shape)]
                          + ([solution[rows]] if layer.use_bias else []))


def _refittable(layer) -> bool:
    kind = type(layer).__name__
    return kind == "Dense" or kind == "Conv2D" and layer.groups == 1 \
        and layer.data_format == "channels_last"


def _inputs(model, layer, images, batch_size: int):
    probe = keras.Model(model.inputs, layer.input)
    for start in range(0, len(images), batch_size):
        yield probe(images[start:start + batch_size], training=False).numpy()


def _rows(layer, x: np.ndarray) -> np.ndarray:
    """The layer's input as the rows its kernel (flattened to 2-D) multiplies."""
    if type(layer).__name__ == "Dense":
        return x.reshape(-1, x.shape[-1])
    patches = tf.image.extract_patches(
        x, sizes=[1, *layer.kernel_size, 1], strides=[1, *layer.strides, 1],
        rates=[1, *layer.dilation_rate, 1], padding=layer.padding.upper())
    return patches.numpy().reshape(-1, patches.shape[-1])


def summary(groups: list[Group]) -> list[dict]:
    """Per group: its layers, channels before and after, and why it was not pruned."""
    return [{"layers": g.members, "channels": g.channels,
             "kept": int(len(g.keep)) if g.keep is not None else g.channels,
             "fixed_by": g.fixed_by} for g in groups]
