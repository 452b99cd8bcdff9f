"""Layer 6, the DVC pipeline: what dvc.yaml must hold (stages), what is
done (status), remotes, the compute plan and the whole pipeline's dry run."""
