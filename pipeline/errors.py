"""The project's error types: one for every input the product cannot use."""


class IngestError(ValueError):
    """An input that cannot be read as an image series.

    The message is one sentence a user understands (what is wrong and, where it
    helps, which file). It never contains patient-identifying header fields.
    """


class StorageError(RuntimeError):
    """The machine cannot store what a command writes (disk full, quota, read-only or failing
    file system). Not a problem of one input: the command stops, and what it had written
    before stays as it was. The message says what was being written."""
