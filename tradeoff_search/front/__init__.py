"""The Pareto front of a study: ranks, the re-timed front, hypervolume, the front as a table."""
