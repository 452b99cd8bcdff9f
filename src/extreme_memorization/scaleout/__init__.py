"""Layer 5, a group's train stages side by side: the shared worktree
machinery (fanout), on this machine (local) and on Slurm (slurm)."""
