"""ResNet-8 on CIFAR-10: remove channels, recover by distillation, QAT, full-INT8 export.

Why: channel (filter) pruning really shrinks the kernels, so the file is smaller and
faster on every runtime, unlike magnitude pruning; distillation from the original model
recovers what the pruning lost; QAT closes the INT8 gap.

    python recipes/resnet8_channels_distill_qat_int8.py --model pretrainedResnet.h5 \\
        --ratio 0.5 --train-data train_original.npz --eval-data val_original.npz \\
        --out runs/channels

Residual connections tie channels across each Add: those groups are pruned together.
`--layer-ratio conv2d_7=0.375` gives one layer (and the layers tied to it) its own ratio;
`--divisor 8` keeps channel counts XNNPACK runs fast. On the MLPerf Tiny ResNet-8 these
settings give stages of 8/16/40 channels, under half the reference INT8's bytes and about
1.7x faster. A few thousand labelled images are not enough to recover from removing half
the channels: add many unlabelled images of the kind the model sees with
`--transfer-data` (here the JPEG-decoded 50k, used through the original model's
predictions only; benchmarks/fidelity_resnet8.py has the figures):

    python recipes/resnet8_channels_distill_qat_int8.py --model pretrainedResnet.h5 \\
        --ratio 0.5 --divisor 8 --layer-ratio conv2d_6=0.375 --layer-ratio conv2d_7=0.375 \\
        --train-data train_original.npz --transfer-data train.npz \\
        --eval-data val_original.npz --out runs/channels
"""

import argparse
import sys

from edgecompress.cli import recipes as cli
from edgecompress.options import Criterion


def arguments(parser):
    parser.add_argument("--ratio", type=float, default=0.5,
                        help="fraction of channels removed (default 0.5)")
    parser.add_argument("--criterion", default="l1", choices=Criterion.values())
    parser.add_argument("--divisor", type=int, default=1,
                        help="keep a multiple of this many channels per layer (default 1)")
    parser.add_argument("--layer-ratio", type=_layer_ratio, action="append", default=[],
                        metavar="LAYER=RATIO", help="a layer's own ratio (repeatable)")
    parser.set_defaults(learning_rate=1e-3, steps=4000)


def _layer_ratio(text):
    name, _, ratio = text.partition("=")
    try:
        return name, float(ratio)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER=RATIO, got {text!r}") from None


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe
    from edgecompress.techniques import channels, quantize

    fit = cli.fit_config(args)
    teach = cli.distill_config(args)
    config = channels.Config(ratio=args.ratio, criterion=args.criterion, divisor=args.divisor,
                             ratios=dict(args.layer_ratio))
    qat = cli.qat_fit_config(args)
    return [recipe.Stage("channels", config, fit, teach),
            recipe.Stage("qat", quantize.Config(), qat, teach)]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages, extra_arguments=arguments))
