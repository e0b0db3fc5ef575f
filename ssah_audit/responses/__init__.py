"""Behaviour: batched generation, the refusal judge, and safety/utility metrics."""
