"""The project's error types: one for every input the product cannot use."""


class IngestError(ValueError):
    """An input that cannot be read as an image series.

    The message is one sentence a user understands (what is wrong and, where it
    helps, which file). It never contains patient-identifying header fields.
    """
