"""Runs a `.tflite` on LiteRT inside the emulated ARM64 Linux (`qemu-aarch64`).

This file runs under the guest's Python with only `ai_edge_litert` and `numpy`: it imports
nothing from edgecompress. Usage: guest.py REQUEST.json, where the request names the model,
the inputs (.npy), the thread count and the folder for the results. Every invoke is
bracketed by marks that the counting plugin sees (`native/count.c`); the last one also
writes the instructions of each code block run, which name XNNPACK's kernels.
"""

import json
import os
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter

__all__ = ["mark", "partitions", "file_maps", "main"]

MARK = 0x45430000
START, STOP, STOP_AND_BLOCKS = 1, 2, 3


def mark(kind):
    try:
        os.lseek(-1, MARK + kind, 0)
    except OSError:  # EBADF, as intended: the plugin saw the call
        pass


def partitions(details):
    """The original nodes that each XNNPACK node replaced: those on a path from the
    delegate node's inputs to its outputs."""
    producers = {}
    for node in details:
        if node["op_name"] != "DELEGATE":
            for tensor in node["outputs"]:
                producers[int(tensor)] = node["index"]
    taken = set()
    for node in (n for n in details if n["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in node["inputs"]}
        pending = [int(t) for t in node["outputs"]]
        while pending:
            tensor = pending.pop()
            producer = producers.get(tensor)
            if tensor in boundary or producer is None or producer in taken:
                continue
            taken.add(producer)
            pending += [int(t) for t in details[producer]["inputs"] if t >= 0]
    return taken


def file_maps():
    """(start, end, offset, path, executable) of each file mapped into this process."""
    maps = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/"):
                start, end = (int(v, 16) for v in parts[0].split("-"))
                maps.append((start, end, int(parts[2], 16), parts[5], "x" in parts[1]))
    return maps


def main(request_path):
    with open(request_path) as f:
        request = json.load(f)
    interpreter = Interpreter(model_path=request["model"], num_threads=request["threads"])
    interpreter.allocate_tensors()
    details = interpreter._get_ops_details()
    taken = partitions(details)
    kept = [n["op_name"] for n in details
            if n["op_name"] != "DELEGATE" and n["index"] not in taken]
    inputs = np.load(request["inputs"])
    index = interpreter.get_input_details()[0]["index"]
    outputs = [[] for _ in interpreter.get_output_details()]
    mark(START)
    mark(STOP)  # the cost of marking, subtracted from every count
    for i, image in enumerate(inputs):
        interpreter.set_tensor(index, image[None])
        mark(START)
        interpreter.invoke()
        mark(STOP_AND_BLOCKS if i == len(inputs) - 1 else STOP)
        for found, detail in zip(outputs, interpreter.get_output_details()):
            found.append(interpreter.get_tensor(detail["index"])[0])
    folder = request["results"]
    np.savez(os.path.join(folder, "outputs.npz"), *[np.stack(o) for o in outputs])
    with open(os.path.join(folder, "graph.json"), "w") as f:
        json.dump({"not_delegated": kept, "maps": file_maps()}, f)


if __name__ == "__main__":
    main(sys.argv[1])
