"""ResNet-8 on CIFAR-10: low-rank factorisation, distillation, post-training INT8.

Why: truncated SVD splits each convolution into two thinner ones (k x 1 then 1 x k) with
fewer weights and multiply-accumulates; distillation from the original recovers the
accuracy lost in truncation.

    python recipes/resnet8_lowrank_distill_int8.py --model pretrainedResnet.h5 \\
        --ratio 0.5 --train-data train_original.npz --eval-data val_original.npz --out runs/lowrank

Layers whose factorisation would not save weights are left as they are.
"""

import sys

from edgecompress.cli import recipes as cli
from edgecompress.options import Method


def arguments(parser):
    parser.add_argument("--ratio", type=float, default=0.5,
                        help="target weights per factorised layer, as a fraction (default 0.5)")
    parser.add_argument("--method", default="spatial", choices=Method.values())
    parser.set_defaults(learning_rate=1e-3, steps=2000)


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe
    from edgecompress.techniques import lowrank

    config = lowrank.Config(ratio=args.ratio, method=args.method)
    return [recipe.Stage("lowrank", config, cli.fit_config(args),
                         cli.distill_config(args))]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages, extra_arguments=arguments))
