"""The thin Click layer: each command parses options, builds a config and calls one library function."""
