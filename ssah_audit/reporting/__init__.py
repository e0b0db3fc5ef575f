"""Rendering results into reports (templates/*.j2, packaged as ssah_audit.templates)."""
