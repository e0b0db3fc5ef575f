"""Prompt sets: the built-in ones we wrote, and loaders for the public formats users bring."""
