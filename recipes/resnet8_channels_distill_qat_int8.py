"""ResNet-8 on CIFAR-10: remove channels, recover by distillation, QAT, full-INT8 export.

Why: channel (filter) pruning really shrinks the kernels, so the file is smaller and
faster on every runtime, unlike magnitude pruning; distillation from the original model
recovers accuracy faster than labels alone; QAT closes the INT8 gap.

    python recipes/resnet8_channels_distill_qat_int8.py --model pretrainedResnet.h5 \\
        --ratio 0.5 --train-data train.npz --eval-data test.npz --out runs/channels

Residual connections tie channels across each Add: those groups are pruned together.
"""

import sys

from edgecompress import recipe, runner
from edgecompress.techniques import channels, distill, quantize


def arguments(parser):
    parser.add_argument("--ratio", type=float, default=0.5,
                        help="fraction of channels removed (default 0.5)")
    parser.add_argument("--criterion", default="l1", choices=channels.Criterion.values())
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.set_defaults(learning_rate=1e-3)


def stages(args, train_data):
    fit = runner.fit_config(args)
    teach = distill.Config(temperature=args.temperature)
    return [recipe.Stage("channels", channels.Config(ratio=args.ratio,
                                                     criterion=args.criterion), fit, teach),
            recipe.Stage("qat", quantize.Config(), fit, teach)]


if __name__ == "__main__":
    sys.exit(runner.script_main(__doc__, stages, extra_arguments=arguments))
