"""ResNet-8 on CIFAR-10: post-training full-INT8 quantisation, no training.

Why: the quickest compression, a quarter of the float file, usually within a few tenths
of a point of the float model; the baseline every other recipe is measured against.

    python recipes/resnet8_ptq_int8.py --model pretrainedResnet.h5 \\
        --train-data train_original.npz --eval-data val_original.npz --out runs/ptq

--train-data is only used for calibration (--calibration-samples images at random).
"""

import sys

from edgecompress.cli import recipes as cli


def stages(args, samples):
    return []


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages))
