class JobError(ValueError):
    """A generation request that cannot be honoured; the message says why."""
