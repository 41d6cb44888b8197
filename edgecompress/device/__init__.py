"""The device side: what runs and checks a `.tflite` file, without TensorFlow.

Reading the flatbuffer (`inspect`, `metadata`), running it on LiteRT (`verify`) and on
TFLite Micro (`micro`) in an isolated child process (`_isolate`), and judging it against a
target's budgets (`targets`, `verdict`). Nothing here may import TensorFlow: a verdict rests
only on what a device would have. `tests/device/test_verify.py` checks it.
"""
