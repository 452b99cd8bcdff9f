"""The proposed loss fixes, each form judged on its own (new: never run by the authors).

`loss_scaling: output` is the paper's wording (temperature, margin or
target times the initial logit scale alpha); for hinge and squared loss it
also multiplies the effective learning rate by alpha and alpha^2.
`loss_scaling: normalized` applies the loss to z / s. `first_layer_step:
compensated` scales W1's learning rate by s^2. The 2x2 of normalized or not
x compensated or not tells "the loss's scale" from "a frozen first layer";
each cell is a claim row with its drops per loss, the diagnosis of the runs
at the ends of the sweep and ||W1 - W1(0)|| / ||W1(0)|| at the largest sigma.
"""

from __future__ import annotations

import pandas as pd

from .lines import PAPER, end_runs, line_name, relu_lines, seed_drops, variant, varying, with_defaults
from .verdicts import NOT_RUN, Claim, mechanism, not_fitted, spread, verdict

TEXT = "the proposed loss fixes restore generalization at large sigma (new: never run by the authors)"
SOURCE = "Sec. 4"
FORMS = {
    ("output", "plain"): "loss_scaling: output (temperature, margin, target x alpha; lr x alpha for hinge, "
    "x alpha^2 for squared)",
    ("normalized", "plain"): "loss_scaling: normalized (the loss of z / s)",
    ("none", "compensated"): "first_layer_step: compensated (W1's learning rate x s^2), the loss as in the paper",
    ("normalized", "compensated"): "loss_scaling: normalized and first_layer_step: compensated",
    ("output", "compensated"): "loss_scaling: output and first_layer_step: compensated",
}


def _diagnoses(runs: pd.DataFrame) -> str:
    if "diagnosis" not in runs or runs["diagnosis"].isna().all():
        return ""
    counts = runs["diagnosis"].value_counts().sort_index()
    return ", ".join(f"{n} {label}" for label, n in counts.items())


def _w1_change(top: pd.DataFrame) -> str:
    change = top["w1_relative_change"].dropna() if "w1_relative_change" in top else pd.Series(dtype=float)
    return f", ||W1 - W1(0)|| / ||W1(0)|| {change.mean():.2g} at sigma={top['sigma'].max():g}" if len(change) else ""


def one_form(frame: pd.DataFrame, form: tuple[str, str]) -> Claim:
    """The claim for one form of the fix: every loss's drop at most RESTORED_DROP."""
    from .claims import RESTORED_DROP

    text = f"{TEXT}: {FORMS.get(form, f'loss_scaling: {form[0]}, first_layer_step: {form[1]}')}"
    relu, keys = relu_lines(frame, form)
    fixed = seed_drops(relu, keys)
    plain_runs, plain_keys = relu_lines(frame, PAPER)
    plain = seed_drops(plain_runs, plain_keys) if plain_keys == keys else {}
    ok = all(v.mean() <= RESTORED_DROP for v in fixed.values())
    parts = []
    for key, drops in fixed.items():
        runs = relu[(relu[keys] == pd.Series(dict(zip(keys, key)))).all(axis=1)]
        ends, top = end_runs(runs, keys), end_runs(runs, keys, "largest")
        state = _diagnoses(ends)
        parts.append(f"{line_name(keys, key)} drop {spread(drops)}"
                     + (f" (without fix {spread(plain[key])})" if key in plain else "")
                     + (f", runs at the ends: {state}" if state else "") + _w1_change(top))  # fmt: skip
    describe = ["dataset", "activation", "loss", *varying(relu, ["learning_rate"]), "sigma"]
    unfit = not_fitted(end_runs(relu, keys), describe)
    why = mechanism(end_runs(relu, keys, "largest"), describe)
    return verdict(text, SOURCE, ok, "; ".join(parts), unfit, why, f"fix:{form[0]}:{form[1]}")


def fixes_restore(frame: pd.DataFrame) -> list[Claim]:
    """One claim per form of the fix that the report's runs have; one 'not run' claim when none."""
    frame = with_defaults(frame)
    relu = frame[(frame["activation"] == "relu") & (frame["labels"] == "true")]
    forms = sorted(set(variant(relu)) - {PAPER}, key=lambda f: list(FORMS).index(f) if f in FORMS else len(FORMS))
    claims = [one_form(frame, form) for form in forms if seed_drops(relu[variant(relu) == form], ["loss"])]
    if claims:
        return claims
    return [
        Claim(
            TEXT,
            SOURCE,
            NOT_RUN,
            "needs ReLU sigma sweeps with loss_scaling: output or normalized, or "
            "first_layer_step: compensated (groups section4_fixes, section4_normalized, ...)",
            name="fix",
        )
    ]
