"""The three tasks: forecast, regress, classify. Each returns a :class:`TaskResult`."""
