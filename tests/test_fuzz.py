"""Untrusted .tflite files: a fixed-seed stream of mutated files through every command
that reads one (inspect, evaluate, verify on LiteRT and TFLite Micro, to-c), as a user
runs them. Each must end in a result or one line with exit status 2: never a Python
traceback, and never a dead process."""

import collections
import time

import numpy as np
import pytest

from edgecompress import cli
from edgecompress.device import metadata
from conftest import write_npz

pytestmark = pytest.mark.slow

FILES = 1000
KINDS = ("truncated", "bit flips", "word overwritten", "zero-size dimension",
         "shape against buffer", "index out of range", "huge count", "wrong type")


def mutations(raw: bytes, count: int, seed: int):
    """(kind, bytes) of `count` mutated files, cycling through `KINDS`."""
    rng = np.random.default_rng(seed)
    for case in range(count):
        kind = KINDS[case % len(KINDS)]
        yield kind, (_bytes if case % len(KINDS) < 3 else _structure)(raw, kind, rng)


def _bytes(raw: bytes, kind: str, rng) -> bytes:
    mutated = bytearray(raw)
    if kind == "truncated":
        return bytes(mutated[:int(rng.integers(0, len(raw)))])
    if kind == "bit flips":
        for position in rng.integers(0, len(raw), int(rng.integers(1, 16))):
            mutated[position] ^= 1 << int(rng.integers(0, 8))
        return bytes(mutated)
    position = int(rng.integers(0, len(raw) - 4)) & ~3
    mutated[position:position + 4] = int(rng.integers(0, 2**32)).to_bytes(4, "little")
    return bytes(mutated)


def _structure(raw: bytes, kind: str, rng) -> bytes:
    """A well-formed flatbuffer whose content is wrong in one way."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = metadata.parse(raw)
    graph = model.subgraphs[0]
    tensor = graph.tensors[int(rng.integers(0, len(graph.tensors)))]
    op = graph.operators[int(rng.integers(0, len(graph.operators)))]
    if kind == "zero-size dimension" and tensor.shape is not None and len(tensor.shape):
        tensor.shape[int(rng.integers(0, len(tensor.shape)))] = 0
    elif kind == "shape against buffer" and tensor.shape is not None and len(tensor.shape):
        tensor.shape[int(rng.integers(0, len(tensor.shape)))] *= int(rng.choice([2, 3, -1]))
    elif kind == "index out of range":
        where = op.inputs if rng.random() < 0.7 else op.outputs
        where[int(rng.integers(0, len(where)))] = int(rng.choice(
            [len(graph.tensors), len(graph.tensors) + 1000, -2, 2**31 - 1]))
    elif kind == "huge count":
        target = rng.integers(0, 3)
        if target == 0 and tensor.shape is not None and len(tensor.shape):
            tensor.shape[0] = 2**31 - 1
        elif target == 1:
            op.opcodeIndex = int(rng.choice([len(model.operatorCodes), 2**31 - 1]))
        else:
            tensor.buffer = int(rng.choice([len(model.buffers), 2**31 - 1]))
    elif kind == "wrong type":
        tensor.type = int(rng.integers(0, 20))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_mutated_files_end_in_a_result_or_one_line_through_every_command(
        int8_file, train_set, tmp_path, capsys):
    images = write_npz(tmp_path / "two.npz", x=train_set.x[:2], y=train_set.y[:2],
                       classes=np.array(train_set.classes))
    commands = {"inspect": ["inspect"], "to-c": ["to-c", "-o", str(tmp_path / "m.cc")],
                "evaluate": ["evaluate", "--data", str(images), "--preprocess", "unit"],
                "verify (LiteRT)": ["verify", "--target", "phone-cpu", "--data", str(images),
                                    "--preprocess", "unit"],
                "verify (TFLite Micro)": ["verify", "--target", "mcu-cortex-m4", "--data",
                                          str(images), "--preprocess", "unit",
                                          "--micro-samples", "2"]}
    outcomes, kinds = collections.Counter(), collections.Counter()
    started = time.monotonic()
    path = tmp_path / "fuzzed.tflite"
    for kind, mutated in mutations(int8_file.read_bytes(), FILES, seed=0):
        kinds[kind] += 1
        path.write_bytes(mutated)
        for name, argv in commands.items():
            status = cli.main([argv[0], str(path), *argv[1:]])  # a traceback fails the test
            out, err = capsys.readouterr()
            errors = [line for line in err.splitlines() if "error:" in line]
            assert status in (0, 1, 2), (kind, name, status, err[-500:])
            if status == 2:
                assert len(errors) == 1 and "Traceback" not in err, (kind, name, err[-500:])
                outcomes[f"{name}: clear error" + (" (interpreter crashed, caught)"
                                                   if "crashed" in err else "")] += 1
            else:
                outcomes[f"{name}: result"] += 1
            if name == "inspect" and status == 2:
                break  # every other command opens the file the same way first
    print(f"{FILES} files in {time.monotonic() - started:.0f} s; kinds {dict(kinds)}; "
          f"outcomes {dict(sorted(outcomes.items()))}")
    assert sum(kinds.values()) == FILES
    assert outcomes["evaluate: result"] > 0 and outcomes["inspect: clear error"] > 0
