"""Studies run: the lifecycle every engine shares, the Optuna and KerasTuner engines, samplers,
workers, storage, Pareto, progress, confirm, Table 1 and the record importer. Imports every
layer below; the commands (allsearch.study, allsearch.leaderboard, ...) sit above."""
