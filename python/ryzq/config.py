"""What ryzq says about a model that is not an error."""


class RyzqWarning(UserWarning):
    """A conversion that works but is likely not what the model needs."""
