"""ssah-audit: safety audits of causal language models, following the Superficial Safety Alignment Hypothesis."""

__version__ = "0.1.0"
