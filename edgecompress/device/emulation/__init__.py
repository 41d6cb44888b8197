"""The targets' own kernels, emulated: TFLite Micro firmware on Cortex-M cores under
`qemu-system-arm`, and LiteRT's ARM64 build under `qemu-aarch64`, both counting the
instructions they run with one QEMU plugin.

`common` (child processes, the cache folder, the plugin) → `sources` (the cross tools and
the pinned TFLite Micro archives) → `firmware` (built and cached from them and `native/`)
→ `cortex_m` (the firmware booted); `arm64` (LiteRT in an emulated Debian, set up by
`arm64.install`). Nothing here imports TensorFlow.
"""
