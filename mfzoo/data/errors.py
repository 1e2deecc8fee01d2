"""The one exception type bad input raises."""


class DataError(ValueError):
    """Input data that mfzoo refuses, with a message naming the file, column and row."""
