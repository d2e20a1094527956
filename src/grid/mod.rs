//! Experiment grids: expand, run locally or as a Slurm job array, report status, collect into tables.
