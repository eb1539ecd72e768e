"""The Walking Tours corpus manifest (data files only)."""
