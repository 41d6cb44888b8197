"""ResNet-8 on CIFAR-10: quantisation-aware training, then full-INT8 export.

Why: post-training INT8 loses a little accuracy that fine-tuning with fake quantisation
wins back; the file is the same size as post-training INT8's.

    python recipes/resnet8_qat_int8.py --model pretrainedResnet.h5 \\
        --train-data train_original.npz --eval-data val_original.npz --out runs/qat

Writes in --out the float, PTQ INT8 and QAT INT8 `.tflite` files, the Keras model and
report.json / report.md comparing them. Measured results: see benchmarks/recipes_resnet8.py.
"""

import sys

from edgecompress.cli import recipes as cli


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe
    from edgecompress.techniques import quantize

    return [recipe.Stage("qat", quantize.Config(), cli.fit_config(args),
                         cli.distill_config(args))]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages))
