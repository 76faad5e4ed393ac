"""The training core: the training step and loop, freeze strategies, optimizers, schedules,
checkpoints, compile, cost and the LR-finder algorithm. Takes objects, never the config."""
