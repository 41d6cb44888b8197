"""ResNet-8 on CIFAR-10: quantisation-aware training for 4-bit weights, then int4w export
(int4 weights, int8 activations).

Why: int4 weights halve the weight bytes of int8 (on the MLPerf Tiny ResNet-8 the file
shrinks to about 60 % of the int8 one: biases, activations' parameters and the graph stay),
and TFLite Micro (reference and CMSIS-NN kernels) runs them. Post-training int4 loses far
too much on this model; training with 4-bit fake quantisation, distilled from the original
model, wins most of it back. TensorFlow's converter writes the int4 kernels from the
learned ranges. On phones, check the latency: LiteRT on x86 ran int4 slower than int8
(benchmarks/int4_resnet8.py has the measured figures).

    python recipes/resnet8_qat_int4.py --model pretrainedResnet.h5 --steps 3000 \\
        --train-data train_original.npz --eval-data val_original.npz --out runs/int4

Writes in --out the float and PTQ INT8 `.tflite` files, `model_int4w.tflite`, the Keras
model and report.json / report.md comparing them.
"""

import sys

from edgecompress.cli import recipes as cli


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe
    from edgecompress.techniques import quantize

    return [recipe.Stage("qat", quantize.Config(weight_bits=4), cli.fit_config(args),
                         cli.distill_config(args))]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages))
