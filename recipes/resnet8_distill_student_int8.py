"""ResNet-8 on CIFAR-10: distil into a half-width ResNet-8 student, QAT, full-INT8 export.

Why: a student with half the filters has about a quarter of the weights and MACs; it
learns from the original's soft predictions as well as the labels.

    python recipes/resnet8_distill_student_int8.py --model pretrainedResnet.h5 \\
        --width 0.5 --train-data train_original.npz --transfer-data train.npz \\
        --eval-data val_original.npz --out runs/student

The student starts from random weights, so it needs more steps than a fine-tuning (8,000
by default) and many images: give unlabelled ones with --transfer-data.
"""

import sys

from edgecompress.cli import recipes as cli


def arguments(parser):
    parser.add_argument("--width", type=float, default=0.5,
                        help="student filters as a fraction of ResNet-8's (default 0.5)")
    parser.set_defaults(learning_rate=1e-3, steps=8000)


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe
    from edgecompress.techniques import quantize, student

    qat = cli.qat_fit_config(args)
    config = student.Config("resnet8", {"width": args.width})
    teach = cli.distill_config(args)
    return [recipe.Stage("student", config, cli.fit_config(args), teach),
            recipe.Stage("qat", quantize.Config(), qat, teach)]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages, extra_arguments=arguments))
