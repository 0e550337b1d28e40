"""Run records, the results store that holds them, a run's environment and the comparison protocols' file."""
