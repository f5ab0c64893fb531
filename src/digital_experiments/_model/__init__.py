"""The model: names and rules with no I/O (canonical keys, the ``where=`` language,
the keys a root's objects live at)."""
