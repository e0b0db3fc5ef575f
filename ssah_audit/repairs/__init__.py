"""Repairs: turn a fine-tune that fails its audit back toward the aligned reference without training (restore the
reference's units, interpolate, add the safety vector back, project the update onto the alignment subspace), each
registered in components.REPAIRS and measured against its control (bench/repair_pair.py). `run.repair` is the API
behind `ssah-audit repair`."""
