"""Compression techniques: each module has a frozen `Config` and `apply(model, config)`
that returns a new model; training-time wrappers come with their `strip`."""
