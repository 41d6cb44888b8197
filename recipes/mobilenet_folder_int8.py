"""Your own classes: a MobileNet v2 trained on an image folder, then QAT and INT8 export.

Why: the common case of a user with a few folders of photos (one sub-folder per class)
and a phone to ship to. The MobileNet is trained from scratch (no pretrained weights are
downloaded), so give it enough images and epochs; 20 % of each class is held out for
evaluation unless --eval-data is given.

    python recipes/mobilenet_folder_int8.py --images photos/ --image-size 96 \\
        --alpha 0.35 --epochs 30 --out runs/my_classes

With a few dozen photos per class, start from a trained model instead and give it a new
classifier for your classes (transfer learning):

    python recipes/mobilenet_folder_int8.py --images photos/ --model pretrainedResnet.h5 \\
        --new-head --preprocess raw --epochs 10 --out runs/my_classes

The first stage (labels only) trains the model, or its new head, and the model it makes
is the reference that QAT distils from and the report and budget compare with.

Images are resized to --image-size and scaled with --preprocess (default symmetric).
"""

import sys

from edgecompress.cli import recipes as cli


def arguments(parser):
    parser.add_argument("--alpha", type=float, default=0.35,
                        help="MobileNet v2 width multiplier (default 0.35)")
    parser.set_defaults(model="zoo:mobilenet_v2", preprocess="symmetric", learning_rate=1e-3,
                        epochs=10, batch_size=32)


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe
    from edgecompress.techniques import quantize

    fit = cli.fit_config(args)
    qat = cli.qat_fit_config(args)
    # trained on labels (the zoo model starts from random weights), then QAT learns from
    # the trained model
    return [recipe.Stage("finetune", None, fit),
            recipe.Stage("qat", quantize.Config(), qat, cli.distill_config(args))]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages, extra_arguments=arguments))
