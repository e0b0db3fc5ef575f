"""Attribute-critical units (SSAH §2): statistics, scores, classes, ablation, verification."""
