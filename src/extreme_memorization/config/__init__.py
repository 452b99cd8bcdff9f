"""Layer 1, the settings: params.yaml read (yamlfile) and validated into one
run configuration per run (settings), and runs grouped into packs (packs)."""
