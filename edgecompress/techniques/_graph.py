"""Rewriting a functional Keras model layer by layer, in topological order."""

from __future__ import annotations

from typing import Callable

from .._tf import keras
from ..errors import ModelError

__all__ = ["inbound", "rebuild"]


def inbound(model: keras.Model) -> dict[str, list[str]]:
    """For each layer, the names of the layers whose outputs it reads (one call each)."""
    result = {}
    for entry in model.get_config()["layers"]:
        nodes = entry["inbound_nodes"]
        if len(nodes) > 1:
            raise ModelError(f"Layer {entry['name']} is called {len(nodes)} times; shared "
                             "layers are not supported here.")
        result[entry["name"]] = [_source(item, entry["name"]) for item in
                                 (nodes[0] if nodes else [])]
    return result


def _source(item, name: str) -> str:
    layer, node_index, tensor_index = item[0], item[1], item[2]
    if node_index != 0 or tensor_index != 0:
        raise ModelError(f"Layer {name} reads output {tensor_index} of call {node_index} of "
                         f"{layer}; only single-call, single-output layers are supported.")
    return layer


def rebuild(model: keras.Model,
            replace: Callable[[keras.layers.Layer], Callable | None]) -> keras.Model:
    """A new model where each layer is rebuilt from its config, or by `replace`.

    `replace(layer)` returns None to keep a fresh copy of the layer (same config, weights
    copied), or a function from the layer's input tensor(s) to its output tensor.
    """
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        raise ModelError(f"`{model.name}` contains nested models; flatten it first.")
    sources = inbound(model)
    tensors = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            tensors[layer.name] = keras.Input(batch_shape=layer.input_shape[0]
                                              if isinstance(layer.input_shape, list)
                                              else layer.input_shape, name=layer.name)
            continue
        inputs = [tensors[name] for name in sources[layer.name]]
        arguments = inputs[0] if len(inputs) == 1 else inputs
        build = replace(layer)
        if build is None:
            clone = layer.__class__.from_config(layer.get_config())
            tensors[layer.name] = clone(arguments)
            clone.set_weights(layer.get_weights())
        else:
            tensors[layer.name] = build(arguments)
    config = model.get_config()
    inputs = [tensors[name] for name in _layer_names(config["input_layers"])]
    outputs = [tensors[name] for name in _layer_names(config["output_layers"])]
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                       outputs[0] if len(outputs) == 1 else outputs, name=model.name)


def _layer_names(entries) -> list[str]:
    """Layer names from a config's `input_layers` / `output_layers` (one or a list)."""
    if entries and isinstance(entries[0], str):
        return [entries[0]]
    return [entry[0] for entry in entries]
