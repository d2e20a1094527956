//! Evaluation: metrics (classification rate, one-off, confusion), white/black-box evaluation, masking checks.
