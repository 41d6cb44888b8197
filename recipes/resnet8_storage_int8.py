"""ResNet-8 on CIFAR-10 for a microcontroller: every weight kept, stored in fewer bits per
layer as TFLite Micro decodes them (a palette of 2^N values per output channel, or a
sparse mask), trained for that storage, full-INT8 export.

Why: with the few thousand in-domain images a user typically has, removing channels
costs 8-14 points, while storing the same weights in fewer bits costs about one. Each
layer named in --plan is clustered to its palette (lutN) or pruned (pruneNN) while it is
fine-tuned, distilled from the input model; the export stores it that way and checks that
TFLite Micro gives the same outputs as plain int8. The file runs on TFLite Micro only
(LiteRT has no DECODE): verify it with --target mcu-cortex-m4 (--emulate for the core).

    python recipes/resnet8_storage_int8.py --model pretrainedResnet.h5 \\
        --train-data train_original.npz --eval-data val_original.npz --out runs/storage

The default plan keeps the first convolution and the two 1x1 shortcuts int8 (a palette
takes more bytes than their values), stores the two 3x3 convolutions of the last stage
(55,296 of the 77,360 weights) in 8 values per channel and the rest in 16. Measured with
the command above (`benchmarks/storage_resnet8.py`, docs/storage.md): 44,880 bytes
(46 % of the MLPerf Tiny INT8 file's 98,496), 0.70 and 0.20 points below the float model
on val_original with seeds 0 and 1 (-0.26 and +0.18 on the JPEG test set), 1.01x the
reference INT8's instructions on an emulated Cortex-M4 (CMSIS-NN) and a 61,748-byte arena;
about 4 minutes of training on 2 cores. `edgecompress sensitivity MODEL --storage` shows
what each layer loses under each storage before training.
"""

import sys

from edgecompress.cli import recipes as cli

PLAN = "conv2d=int8,conv2d_5=int8,conv2d_8=int8,conv2d_6=lut3,conv2d_7=lut3,*=lut4"


def arguments(parser):
    parser.add_argument("--plan", default=PLAN,
                        help="storage per layer: LAYER=KIND,... with KIND int8, int4, "
                             "lut2-lut7 or prune1-prune99, '*' for every other layer, or a "
                             f"JSON file (default {PLAN})")
    parser.set_defaults(steps=3000, learning_rate=3e-4, strip_names=True)


def stages(args, samples):
    # imported here, so that --help and argument errors answer without TensorFlow
    from edgecompress import recipe, storage
    from edgecompress.techniques import storage as for_storage

    plan = storage.plan_json(storage.parse_plan(args.plan))
    fit = cli.fit_config(args)
    end = max(1, 2 * fit.total_steps(samples) // 3)  # pruned layers then recover
    return [recipe.Stage("storage", for_storage.Config(plan, end_step=end,
                                                       frequency=max(1, end // 10)),
                         fit, cli.distill_config(args))]


if __name__ == "__main__":
    sys.exit(cli.script_main(__doc__, stages, extra_arguments=arguments))
