"""Reading roots: what a root holds, selecting and loading runs, comparing them,
tables, and the trash."""
