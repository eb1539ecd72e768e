"""Shard sets on the Hugging Face Hub (docs/hub.md).

paths: the repo layout and hf:// URLs; client: repo, login and the Hub's errors; source: each video's
provenance; card: the dataset card; push: upload (resumable, batched commits); pull: download (verified,
resumable). Training and inspection stream hf:// shards through wtours/clips/spec.py."""
