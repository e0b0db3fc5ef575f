"""`python -m ssah_audit.cli`, the same as the `ssah-audit` script."""

from . import main

main()
