"""Video -> time-ordered WebDataset shards (plan, decode, blank filter, tar writer, index)."""
