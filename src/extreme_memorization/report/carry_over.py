"""What a verdict on digits says about CIFAR: one paragraph per claim.

A report whose runs are all on scikit-learn's digits (the demo, the offline
study) closes with these. Each paragraph states the verdict found here, what
of it should carry to the paper's CIFAR-10/100 and SVHN runs and why, and
what digits cannot say. The texts depend on the verdicts and the runs' own
settings (examples, inputs, epochs); the numbers are those of the claims
table above them. Sigma is compared through sigma*sqrt(D), the pre-activation
scale, since per-image standardization makes ||x||^2 = D.
"""

from __future__ import annotations

import math

import pandas as pd

from .verdicts import FAILS, HOLDS, INCONCLUSIVE, NOT_FITTED, NOT_RUN, Claim

CIFAR_D = 3072  # 32x32x3 inputs of CIFAR-10/100 and SVHN


def digits_facts(frame: pd.DataFrame) -> str:
    """The digits runs' own sizes beside CIFAR's, and sigma*sqrt(D), the pre-activation scale:
    per-image standardization makes ||x||^2 = D, so sigma means different things on datasets with
    different D. The sizes are the runs' records (run.json): the examples, inputs and classes of the
    data they trained on, and the epochs of their settings."""
    # The MLP's sigma sweeps (Sec. 5's MLP may see the images enlarged, as its architectures do)
    mlp = frame[(frame["model"] == "mlp") & frame["sigma"].notna()] if "model" in frame else frame

    def one(col: str, runs: pd.DataFrame = mlp) -> float | None:
        values = runs[col].dropna().unique() if col in runs else []
        return float(values[0]) if len(values) == 1 else None

    train, test, dim, classes = one("train_examples"), one("test_examples"), one("input_dim"), one("num_classes")
    epochs = sorted({int(e) for e in mlp["epochs"].dropna()}) if "epochs" in mlp else []
    size = f"{train:,.0f} training and {test:,.0f} test images" if train and test else "the digits images"
    dim_text = f"{dim:.0f} inputs" if dim else "8x8 grey pixels"
    dim_text += f", {classes:.0f} classes" if classes else ""
    epoch_text = f"{' or '.join(str(e) for e in epochs)} epochs for the MLP sigma sweeps" if epochs else "the MLP runs"
    text = (f"Digits here: {size} ({dim_text}), {epoch_text}; the paper's CIFAR-10: 50,000 training "
            f"images of 32x32x3 ({CIFAR_D:,} inputs), 2,000 epochs. The MLP's width (1,024) is the paper's, so "
            f"here it has {'nearly as many hidden units as' if train and train < 4096 else 'a width set against'} "
            f"the training images (1,024 and {train:,.0f}; on CIFAR 1,024 and 50,000): fitting every training image "
            "is much easier than on CIFAR." if train else "")  # fmt: skip
    if dim:
        top = float(frame["sigma"].max()) if "sigma" in frame and frame["sigma"].notna().any() else 10.0
        scale = top * math.sqrt(dim)
        text += (f" Sigma is relative to the input size: per-image standardization makes ||x||^2 = D, so a "
                 f"first-layer pre-activation has stddev sigma*sqrt(D), {math.sqrt(dim):.0f} x sigma here (D = "
                 f"{dim:.0f}) and {math.sqrt(CIFAR_D):.0f} x sigma on CIFAR (D = {CIFAR_D:,}). Digits' largest "
                 f"sigma, {top:g}, is a pre-activation scale of {scale:.0f}: CIFAR's sigma = "
                 f"{scale / math.sqrt(CIFAR_D):.2g}; compare the two on sigma*sqrt(D), not on sigma.")  # fmt: skip
    return text.strip()


# Per claim (keyed by Claim.name): what should carry to CIFAR, and what digits cannot say.
NOTES = {
    "memorization": (
        "sin(W1 x) at large sigma is a random-feature map whose features are nearly unrelated between any two "
        "images; that property is of the initialization, not of the data, so the verdict is expected to carry.",
        "How many epochs CIFAR needs to reach 100% train accuracy, and whether test accuracy sits exactly at chance "
        "there, digits cannot say.",
    ),
    "relu_less": (
        "ReLU is homogeneous: scaling W1 scales the logits, so sigma acts only through the loss. That argument "
        "does not use the data and carries.",
        "How much ReLU loses on CIFAR, where even small sigma generalizes far worse than on digits, is not "
        "predicted by the size of the drop here.",
    ),
    "follows_loss": (
        "Which loss fails at which sigma follows from the logits' scale against the loss's own scale "
        "(temperature, margin, targets), and both scales are set by the initialization, not the data.",
        "The size of each drop on CIFAR, where even the smallest sigma tests far below digits, is not decided here.",
    ),
    "fix": (
        "Each form of the fix undoes the scaling argument at initialization on any data; the form as worded "
        "(loss_scaling: output) also multiplies the effective learning rate by alpha (hinge) or alpha^2 (squared), "
        "which does not depend on the data either.",
        "The authors never ran it; a verdict here is the first evidence, on one small dataset, not a CIFAR result.",
    ),
    "falls": (
        "Alignment is computed from the same per-class gradients on any data; its fall with sigma follows the "
        "features' decorrelation, which is of the initialization.",
        "Its absolute values (the paper's Fig. 2 scale) depend on the dataset and are not comparable across the two.",
    ),
    "tracks": (
        "The comparison is of rank correlations over the same sweep of initializations, as in the paper, on the "
        "same runs for every measure and per line of runs.",
        "On digits the runs' best test accuracies are close together for most sigmas (a few test images apart), so "
        "the ranking is decided by few runs; on CIFAR the spread is larger and the comparison sharper.",
    ),
    "labels": (
        "Shuffled labels leave no class structure to align with, on any data.",
        "The ResNet and DenseNet here are the families at depth 14 and 21 (not 50 and 121), on 8x8 digits enlarged "
        "to 32x32, trained for fewer epochs than the paper: a model whose shuffled-label train accuracy (in the "
        "table above) is far from 1 is compared before it memorized, not after as in the paper, so its gap need "
        "not carry either way.",
    ),
}


def _verdict(claim: Claim) -> str:
    if claim.verdict == HOLDS:
        return "holds on digits"
    if claim.verdict == FAILS:
        return "does not hold on digits"
    if claim.verdict in (NOT_FITTED, INCONCLUSIVE):
        return "is inconclusive on digits"
    return "is not run in this report"


def section(claims: list[Claim], frame: pd.DataFrame | None = None) -> list[str]:
    """Markdown lines: a heading, the datasets' differences, a paragraph per claim."""
    facts = digits_facts(frame) if frame is not None else ""
    lines = ["## What these digits verdicts say about CIFAR", "", *([facts, ""] if facts else [])]
    for claim in claims:
        carries, limits = NOTES.get(claim.name.split(":")[0], ("", ""))
        head = f"**{claim.claim[0].upper()}{claim.claim[1:]}** ({claim.source}) {_verdict(claim)}."
        if claim.verdict == NOT_RUN:
            lines += [f"{head} Its digits twin is in the offline study (`make offline-paper`, reports/offline).", ""]
            continue
        if claim.verdict == FAILS:
            carries = "A failure here is a reason to look at the CIFAR runs, not a verdict on them. " + carries
        if claim.verdict == NOT_FITTED:
            carries = ("A run it needs was still learning when its epochs ran out (named in the table above, with "
                       "the epochs its trend needs), so digits gives no verdict yet. " + carries)  # fmt: skip
        if claim.verdict == INCONCLUSIVE:
            carries = "The numbers above do not decide it (an interval covers 0). " + carries
        if "optimization failure" in claim.mechanism:
            carries = ("Some of its runs failed to train (stuck, dead or diverged; named in the table above): that "
                       "is a finding about optimization, not memorization, and more epochs do not change it. "
                       + carries)  # fmt: skip
        if claim.mechanism.startswith("Counter-evidence"):
            carries = ("In some lines alignment falls while test accuracy does not (named in the table above): "
                       "there the fall does not track generalization. " + carries)  # fmt: skip
        lines += [" ".join(p for p in (head, carries, limits) if p), ""]
    return lines
