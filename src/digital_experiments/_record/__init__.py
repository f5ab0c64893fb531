"""Recording one call: the run itself, its callbacks, the cache, the code and the
environment it ran in, and the signals it handles."""
