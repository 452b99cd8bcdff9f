"""Layer 2, the data: where a dataset comes from (sources), the prepared
.npz files and what training sees (datasets), the download probe (network)
and datasets of your own under version control (own)."""
