"""Streaming DoRA clips from shards: spec -> shard shuffle -> node/worker split -> tar -> clips -> augment -> batch."""
