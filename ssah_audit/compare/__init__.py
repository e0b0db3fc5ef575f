"""A model against its reference: behaviour (behavior.py), the probe (probe.py) and the units (units.py)."""
