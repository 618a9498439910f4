"""Training infrastructure around the methods: the LightningModule, checkpoints (format, atomic
writes, step checkpoints), the NaN/inf guard, RNG states, DDP glue, the allocator setting, speed
options (channels_last, compile) and Hydra sweep/launcher glue."""
