"""The probe: one module per registered variant (self, lens, paper), what a variant is (variant.py), the
shared paths and hidden states (paths.py), and the measurement every variant goes through (measure.py)."""
