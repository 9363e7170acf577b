"""Reading what studies stored: the leaderboard and its tables, the UI, predict. Imports core,
data, training and tracking; never an engine."""
