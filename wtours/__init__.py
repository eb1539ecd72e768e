"""wtours: the Walking Tours corpus toolkit (download -> shard -> stats -> train -> hub)."""

__version__ = "0.1.0"
