"""Errors the CLI turns into one clear message and an exit code."""


class TlappError(Exception):
    """A failure the user can fix: bad usage, config or data (exit code 2).

    The message says what is wrong, where, and how to fix it.
    """

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.render())

    def render(self) -> str:
        text = self.what
        if self.where:
            text += f"\n  where: {self.where}"
        if self.fix:
            text += f"\n  fix:   {self.fix}"
        return text


class ConfigError(TlappError):
    """The job spec has an unknown key, a wrong type or an impossible value."""


class DataError(TlappError):
    """Input data is malformed: unreadable files, bad labels, bad boxes."""


class PluginError(TlappError):
    """A plugin is missing, broken, or breaks the hook contract."""


class TrainingError(TlappError):
    """Training itself failed (non-finite loss, broken strategy invariant): exit code 1."""

    exit_code = 1
