"""Layer 2, the data: datasets prepared into .npz files (datasets), your own
.npz file read and checked (npz), the download probe (network) and datasets
of your own under version control (own)."""
