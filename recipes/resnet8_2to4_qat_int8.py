"""ResNet-8 on CIFAR-10: 2:4 structured sparsity, then pruning-preserving QAT, INT8.

Why: 2:4 (two of every four consecutive input-channel weights zero) is the pattern that
sparse hardware accelerates; LiteRT and TFLite Micro run it dense, so here it shows as
gzip size. Layers whose input channels are not a multiple of 4 (the first convolution)
stay dense, as the stage's warning says.

    python recipes/resnet8_2to4_qat_int8.py --model pretrainedResnet.h5 \\
        --train-data train_original.npz --eval-data val_original.npz --out runs/2to4
"""

import sys

from edgecompress.cli import recipes as cli


def arguments(parser):
    parser.set_defaults(steps=3000, learning_rate=5e-4)


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe
    from edgecompress.techniques import quantize

    fit = cli.fit_config(args)
    teach = cli.distill_config(args)
    return [recipe.pruning(fit, samples, pattern="2:4", distill=teach),
            recipe.Stage("qat", quantize.Config(scheme="prune-preserve"),
                         cli.qat_fit_config(args), teach)]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages, extra_arguments=arguments))
