"""Error types the CLI maps to exit codes: a user mistake is one line and exit 2."""


class UserError(Exception):
    """A problem with what the user gave us (path, model, file, option). The CLI prints it and exits 2."""

    exit_code = 2


class ReportNotWritten(UserError):
    """The audit ran, but its report could not be written (`ssah_audit.audit(out=...)`): the measured result is
    kept on the error, so a caller loses the report's folder, not the audit."""

    def __init__(self, message: str, result):
        super().__init__(message)
        self.result = result
