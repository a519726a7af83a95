"""Errors a user can fix: printed as one clear message, never as a traceback."""


class CnnStudyError(Exception):
    """A problem with the user's input (config, data, paths), not a bug in cnn_study."""


class DataNotFoundError(CnnStudyError):
    """No usable dataset under the configured root, and it could not be downloaded."""
