"""What a verdict on digits says about CIFAR: one paragraph per claim.

A report whose runs are all on scikit-learn's digits (the demo, the offline
study) closes with these. Each paragraph states the verdict found here, what
of it should carry to the paper's CIFAR-10/100 and SVHN runs and why, and
what digits cannot say. The texts depend only on the verdicts; the numbers
are those of the claims table above them.
"""

from __future__ import annotations

from .claims import FAILS, HOLDS, NOT_FITTED, NOT_RUN, Claim

DIGITS = (
    "Digits here: 1,437 training and 360 test images of 8x8 grey pixels (64 inputs, 10 classes), 300 epochs for the "
    "MLP groups; the paper's CIFAR-10: 50,000 training images of 32x32x3 (3,072 inputs), 2,000 epochs. The MLP's "
    "width (1,024) is the paper's, so here it has nearly as many hidden units as training images (1,024 and 1,437; "
    "on CIFAR 1,024 and 50,000): fitting every training image is much easier than on CIFAR."
)

# Per claim (in claims.judge's order): what should carry to CIFAR, and what digits cannot say.
NOTES = [
    (
        "sin(W1 x) at large sigma is a random-feature map whose features are nearly unrelated between any two "
        "images; that property is of the initialization, not of the data, so the verdict is expected to carry.",
        "How many epochs CIFAR needs to reach 100% train accuracy, and whether test accuracy sits exactly at chance "
        "there, digits cannot say.",
    ),
    (
        "ReLU is homogeneous: scaling W1 scales the logits, so sigma acts only through the loss. That argument "
        "does not use the data and carries.",
        "How much ReLU loses on CIFAR, where even small sigma generalizes far worse than on digits, is not "
        "predicted by the size of the drop here.",
    ),
    (
        "Which loss fails at which sigma follows from the logits' scale against the loss's own scale "
        "(temperature, margin, targets), and both scales are set by the initialization, not the data.",
        "The size of each drop on CIFAR, where even the smallest sigma tests far below digits, is not decided here.",
    ),
    (
        "The fix (the loss's temperature, margin or target scaled by the initial logit scale) undoes the "
        "scaling argument exactly at initialization, on any data.",
        "The authors never ran it; a verdict here is the first evidence, on one small dataset, not a CIFAR result.",
    ),
    (
        "Alignment is computed from the same per-class gradients on any data; its fall with sigma follows the "
        "features' decorrelation, which is of the initialization.",
        "Its absolute values (the paper's Fig. 2 scale) depend on the dataset and are not comparable across the two.",
    ),
    (
        "The comparison is of rank correlations over the same sweep of initializations, as in the paper.",
        "On digits the runs' best test accuracies are close together for most sigmas (a few test images apart), so "
        "the ranking is decided by few runs; on CIFAR the spread is larger and the comparison sharper.",
    ),
    (
        "Shuffled labels leave no class structure to align with, on any data.",
        "The ResNet and DenseNet here are the families at depth 14 and 21 (not 50 and 121), on 8x8 digits enlarged "
        "to 32x32, trained 20 epochs (the MLP and the ConvNet 200): a model whose shuffled-label train accuracy "
        "(in the table above) is far from 1 is compared before it memorized, not after as in the paper, so its "
        "gap need not carry either way.",
    ),
]


def _verdict(claim: Claim) -> str:
    if claim.verdict == HOLDS:
        return "holds on digits"
    if claim.verdict == FAILS:
        return "does not hold on digits"
    if claim.verdict == NOT_FITTED:
        return "is inconclusive on digits"
    return "is not run in this report"


def section(claims: list[Claim]) -> list[str]:
    """Markdown lines: a heading, the datasets' differences, a paragraph per claim."""
    lines = ["## What these digits verdicts say about CIFAR", "", DIGITS, ""]
    for claim, (carries, limits) in zip(claims, NOTES, strict=True):
        head = f"**{claim.claim[0].upper()}{claim.claim[1:]}** ({claim.source}) {_verdict(claim)}."
        if claim.verdict == NOT_RUN:
            lines += [f"{head} Its digits twin is in the offline study (`make offline-paper`, reports/offline).", ""]
            continue
        if claim.verdict == FAILS:
            carries = "A failure here is a reason to look at the CIFAR runs, not a verdict on them. " + carries
        if claim.verdict == NOT_FITTED:
            carries = ("A run it needs did not fit its training set (named in the table above), so digits gives no "
                       "verdict yet: more epochs decide. " + carries)  # fmt: skip
        lines += [f"{head} {carries} {limits}", ""]
    return lines
