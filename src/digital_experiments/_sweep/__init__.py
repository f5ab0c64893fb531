"""Sweeping: the engine that runs many configs on any executor, their plan, and
the claims that keep concurrent sweeps from running a config twice."""
