"""ResNet-8 on CIFAR-10: weight clustering, then cluster-preserving QAT, full-INT8 export.

Why: with few distinct values per kernel the INT8 weights compress well (gzip); CQAT
keeps the clusters through quantisation-aware training. Measured on the MLPerf Tiny
ResNet-8 (benchmarks/recipes_resnet8.py): 8 clusters give 62.7 % of the reference INT8's
gzip bytes, 16 clusters 71.2 %.

    python recipes/resnet8_cluster_qat_int8.py --model pretrainedResnet.h5 --clusters 8 \\
        --train-data train_original.npz --eval-data val_original.npz --out runs/cqat
"""

import sys

from edgecompress.cli import recipes as cli


def arguments(parser):
    parser.add_argument("--clusters", type=int, default=8,
                        help="distinct values per kernel (default 8)")
    parser.add_argument("--per-channel", action="store_true",
                        help="cluster each output channel of a convolution separately")


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe
    from edgecompress.techniques import cluster, quantize

    fit = cli.fit_config(args)
    teach = cli.distill_config(args)
    config = cluster.Config(clusters=args.clusters, per_channel=args.per_channel)
    return [recipe.Stage("cluster", config, fit, teach),
            recipe.Stage("qat", quantize.Config(scheme="cluster-preserve"),
                         cli.qat_fit_config(args), teach)]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages, extra_arguments=arguments))
