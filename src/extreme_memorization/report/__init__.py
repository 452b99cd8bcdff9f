"""Layer 5, a group's report: the claims and their statistics, the
paper's figures, and two revisions compared."""
