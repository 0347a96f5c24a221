"""The PNGs of `dance eval image`: quality vs compression ratio, and the paper's Figure 2."""
from __future__ import annotations

from pathlib import Path

from evaluation.image_table import BASELINES, Method
from evaluation.report import finite, ratio_axis, save_figure


def plot_quality(methods: list[Method], summaries: list[dict], path: Path) -> None:
    """PSNR and MS-SSIM vs compression ratio: every frame, and each method's mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"dance": "C0", "rr_jpeg": "C1", "rr_webp": "C2", "rr_avif": "C3"}
    codecs = list(dict.fromkeys(m.codec for m in methods))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for axis, key, label in ((axes[0], "psnr_db", "PSNR (dB)"), (axes[1], "ms_ssim", "MS-SSIM")):
        for method, summary in zip(methods, summaries):
            done = [f for f in method.frames if f["bytes"] and finite(f[key])]
            marker = "osD^v<>"[codecs.index(method.codec) % 7]
            colour = colours[method.family]
            axis.scatter([f["compression_ratio"] for f in done], [f[key] for f in done],
                         s=14, alpha=0.35, color=colour, marker=marker)
            if summary["compression_ratio"] and finite(summary[key]):
                axis.scatter([summary["compression_ratio"]], [summary[key]], s=90,
                             color=colour, marker=marker, edgecolors="black",
                             label=summary["method"])
        low, high = axis.get_xlim()
        if high > 5 * low:  # a log axis only when the ratios span enough to need it
            axis.set_xscale("log")
        ratio_axis(axis, "compression ratio (raw bytes / bytes)", label)
    axes[0].legend(fontsize=7)
    fig.suptitle("Quality vs compression ratio (small: frames, large: means)")
    fig.tight_layout()
    save_figure(fig, path)


def plot_figure(frame_name: str, original, results: list, path: Path,
                per_codec: int = 1 + len(BASELINES)) -> None:
    """Figure 2 of the paper: one frame through RR+JPEG, RR+WebP (RR+AVIF) and the first codec at
    the same size, whole frames above and a centre crop at full resolution below; `per_codec`:
    the methods of each codec in `results` (the codec's row, then its baselines)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from evaluation.image_quality import psnr

    first = results[:per_codec]
    panels = [("original", original, f"{original.nbytes:,} B raw")]
    for method, result in first[1:] + first[:1]:
        if result is None:
            panels.append((method.name, None, "budget below the smallest encoding"))
            continue
        data, image, detail = result
        how = f" · 1/{detail['scale']:g} q{detail['quality']}" if "scale" in detail else ""
        panels.append((method.name.split(" @ ")[0], image,
                       f"{len(data):,} B · {original.nbytes / len(data):.0f}:1 · "
                       f"{psnr(original, image):.2f} dB{how}"))
    h, w = original.shape[:2]
    side = max(16, min(h, w) // 4)
    top, left = (h - side) // 2, (w - side) // 2
    fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 7.6), squeeze=False)
    for column, (title, image, caption) in enumerate(panels):
        whole, crop = axes[0][column], axes[1][column]
        if image is not None:
            whole.imshow(image)
            whole.add_patch(Rectangle((left, top), side, side, fill=False, color="yellow", lw=1))
            crop.imshow(image[top:top + side, left:left + side], interpolation="nearest")
        whole.set_title(f"{title}\n{caption}", fontsize=8)
        for axis in (whole, crop):
            axis.set_xticks([])
            axis.set_yticks([])
    axes[1][0].set_ylabel(f"centre {side}×{side} crop, 1:1", fontsize=8)
    fig.suptitle(f"{frame_name}: the same frame through each method at similar size")
    fig.tight_layout()
    save_figure(fig, path)



