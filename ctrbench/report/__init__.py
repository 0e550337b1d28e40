"""What is generated from the store: leaderboards, scaling reports, plots, the reference numbers."""
