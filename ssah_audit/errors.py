"""Error types the CLI maps to exit codes: a user mistake is one line and exit 2."""


class UserError(Exception):
    """A problem with what the user gave us (path, model, file, option). The CLI prints it and exits 2."""

    exit_code = 2
