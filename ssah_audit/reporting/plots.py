"""The report's figures as PNG bytes (matplotlib, no display): the same bytes go inline into the HTML report
and into files for the Markdown report and `--plot`."""

from __future__ import annotations

import io

import numpy as np

CLASS_COLOURS = {"SCU": "#d62728", "CU": "#9467bd", "UCU": "#1f77b4", "RU": "#c7c7c7"}


def _figure(ncols: int, width: float = 11, height: float = 4):
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot

    return pyplot.subplots(1, ncols, figsize=(width, height), constrained_layout=True)


def _png(figure) -> bytes:
    from matplotlib import pyplot

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    pyplot.close(figure)
    return buffer.getvalue()


def legend(name: str, most: int = 48) -> str:
    """A model name as a legend label: a long path would squeeze the axes to nothing (and a 100 KB name took
    matplotlib minutes to lay out), so the middle goes."""
    name = str(name)
    return name if len(name) <= most else name[:most // 2 - 1] + "…" + name[-(most // 2):]


def probe_figure(doc: dict) -> bytes:
    """Left: mean lean per layer (k >= 2), model and reference (the paper's Fig. 4 idea). Right: the model's lean
    for every layer and step (Fig. 2/3), red = leans to refusal. The value is the own path's cosine margin
    d(G, C) - d(G, R) (self), log p(R) - log p(C) (lens) or the query's margin d_C - d_R (paper)."""
    figure, (curve, heat) = _figure(2)
    lean = {"self": "margin d(G,C) - d(G,R)", "lens": "lean log p(R) - log p(C)"}.get(doc.get("variant"),
                                                                                     "margin d_C - d_R")
    layers = np.arange(doc["layers"])
    curve.axhline(0, color="black", linewidth=0.8)
    curve.plot(layers, doc["layer_margin"], marker="o", label=legend(doc["model"]))
    reference = doc.get("reference")
    if reference and len(reference["layer_margin"]) == len(layers):
        curve.plot(layers, reference["layer_margin"], marker="s", linestyle="--",
                   label=legend(reference["model"]) + " (ref)")
    curve.set(xlabel="layer (0 = embeddings)", ylabel=f"mean {lean} (k >= 2)",
              title="> 0: leans to refusal")
    curve.legend(fontsize=8)
    margin = np.array(doc["margin"])
    limit = max(float(np.abs(margin).max()), 1e-6)
    image = heat.imshow(margin, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit,
                        extent=(0.5, doc["steps"] + 0.5, -0.5, doc["layers"] - 0.5))
    heat.set(xlabel="continuation tokens k", ylabel="layer", title=f"{lean.split()[0]}, safe_direction_score "
             f"{doc['safe_direction_score']:.2f}")
    figure.colorbar(image, ax=heat)
    return _png(figure)


def unit_figure(per_layer: list[dict]) -> bytes:
    """Per-layer stacked bars of the four unit classes, attention and MLP side by side."""
    figure, axes = _figure(2)
    layers = [row["layer"] for row in per_layer]
    for axis, module in zip(axes, ("attn", "mlp"), strict=True):
        bottom = np.zeros(len(layers))
        for name, colour in CLASS_COLOURS.items():
            counts = np.array([row[module][name] for row in per_layer], dtype=float)
            axis.bar(layers, counts, bottom=bottom, color=colour, label=name)
            bottom += counts
        axis.set(xlabel="layer", ylabel="units", title="attention" if module == "attn" else "MLP", xticks=layers)
    axes[1].legend(fontsize=8)
    return _png(figure)


def transfer_figure(transfer: dict) -> bytes:
    """The attribute-transfer matrix: share of each reference class (rows) carried by each class in the model."""
    figure, axis = _figure(1, width=5, height=4.2)
    fractions = np.array(transfer["fractions"])
    image = axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    names = transfer["classes"]
    axis.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
             xlabel="class in the model", ylabel="class in the reference", title="attribute transfer")
    for i, row in enumerate(transfer["counts"]):
        for j, count in enumerate(row):
            axis.text(j, i, f"{fractions[i, j]:.0%}\n({count})", ha="center", va="center", fontsize=8,
                      color="white" if fractions[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axis)
    return _png(figure)


def frontier_figure(points: list[dict], reference: float | None) -> bytes:
    """The repairs measured on the embedded pair: held-out harmful compliance (y) against the share of the
    fine-tune's utility NLL gain kept (x); random controls hollow; the goal's corner dashed."""
    figure, axis = _figure(1, width=7, height=4.2)
    models = list(dict.fromkeys(point["model"] for point in points))
    for index, model in enumerate(models):
        colour = f"C{index}"
        for control in (False, True):
            chosen = [p for p in points if p["model"] == model and p["control"] == control]
            if chosen:
                axis.scatter([p["gain_kept"] for p in chosen], [p["compliance"] for p in chosen], s=26,
                             facecolors="none" if control else colour, edgecolors=colour,
                             label=legend(model) + (" (random control)" if control else ""))
        for point in (p for p in points if p["model"] == model):
            axis.annotate(point["row"], (point["gain_kept"], point["compliance"]), fontsize=6,
                          xytext=(3, 2), textcoords="offset points")
    if reference is not None:
        axis.axhline(reference + 0.10, color="grey", linestyle="--", linewidth=0.8, label="reference + 10 points")
    axis.axvline(0.70, color="grey", linestyle=":", linewidth=0.8, label="70% of the NLL gain kept")
    axis.set(xlabel="share of the fine-tune's utility NLL gain kept", ylabel="harmful compliance (held-out)",
             title="repairs on the embedded pair (evidence on one small model)")
    axis.legend(fontsize=7)
    return _png(figure)


def depth_figure(curves: list[dict]) -> bytes:
    """Harmful compliance against the number of compliant tokens prefilled, one line per model with its 95%
    interval shaded (curves: {"model", "k", "rate", "low", "high"})."""
    figure, axis = _figure(1, width=6, height=3.8)
    for index, curve in enumerate(curves):
        axis.plot(curve["k"], curve["rate"], marker="o", color=f"C{index}", label=legend(curve["model"]))
        axis.fill_between(curve["k"], curve["low"], curve["high"], color=f"C{index}", alpha=0.15)
    axis.axhline(0.5, color="grey", linestyle=":", linewidth=0.8, label="half comply (the depth)")
    axis.set(xlabel="compliant tokens prefilled (k)", ylabel="harmful compliance", ylim=(-0.02, 1.02),
             title="how deep the refusal is: compliance after a prefilled answer")
    axis.legend(fontsize=7)
    return _png(figure)
