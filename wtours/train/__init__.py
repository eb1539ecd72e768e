"""`wtours train`: DoRA from shards (config, schedules, optimisation, checkpoints, the loop, export)."""
