"""ResNet-8 on CIFAR-10: magnitude pruning, then pruning-preserving QAT, full-INT8 export.

Why: pruning zeroes most weights, PQAT keeps those zeros through quantisation-aware
training, so the INT8 file compresses far better (gzip); the kernels keep their shape, so
latency does not change (for that, see channel pruning).

    python recipes/resnet8_prune_qat_int8.py --model pretrainedResnet.h5 --sparsity 0.75 \\
        --train-data train_original.npz --eval-data val_original.npz --out runs/pqat

The sparsity ramps up polynomially over the first two thirds of the pruning stage. Both
stages distil from the input model, its predictions and its feature maps at each resolution
(--feature-weight, default 10 here): with 4k fine-tuning images that halved the loss on the
JPEG test set (benchmarks/fidelity_resnet8.py).
"""

import sys

from edgecompress.cli import recipes as cli


def arguments(parser):
    parser.add_argument("--sparsity", type=float, default=0.75,
                        help="fraction of the weights pruned (default 0.75)")
    parser.add_argument("--allocation", choices=["global", "uniform"], default="global",
                        help="global (default): one magnitude threshold over all kernels, so "
                             "layers with small weights lose more and sensitive small layers "
                             "less; uniform: every kernel to --sparsity")
    parser.set_defaults(steps=3000, learning_rate=2e-3, feature_weight=10.0)


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe
    from edgecompress.techniques import quantize

    fit = cli.fit_config(args)
    teach = cli.distill_config(args)
    return [recipe.pruning(fit, samples, sparsity=args.sparsity, allocation=args.allocation,
                           distill=teach),
            recipe.Stage("qat", quantize.Config(scheme="prune-preserve"),
                         cli.qat_fit_config(args), teach)]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages, extra_arguments=arguments))
