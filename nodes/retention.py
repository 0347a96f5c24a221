"""`label_retention`: running label retention of a classifier on decoded vs original frames."""
from __future__ import annotations

from evaluation.retention import Retention
from pipeline.join import Join
from pipeline.node import Input, Node, Output, Param
from pipeline.packet import Packet


class LabelRetention(Node):
    """Running fraction of frames whose label on the decoded frame equals the label on the
    original frame, with a 95% Wilson interval: over all matched frames, and over the frames
    whose original prediction is confident (the paper's min-logit filter, set on the original
    frames' classifier).

    Predictions are matched by timestamp; predictions without a partner (a classifier skipped
    the frame under load) are counted per input in the `frames` counters of the report."""

    original = Input("labels", "predictions on the uncompressed frames")
    decoded = Input("labels", "predictions on the decoded frames")
    metrics = Output("metrics", "running retention after every matched frame")
    tolerance_ms = Param(float, 1.0, "largest timestamp difference of a matched pair", min=0.0)
    pending = Param(int, 256, "predictions per input kept waiting for their partner", min=1)
    print_every = Param(int, 1, "print the running retention every N matched frames; 0 = only "
                                "at the end", min=0)
    frames = Join("original", "decoded", by="timestamp", tolerance="tolerance_ms",
                  size="pending")

    def setup(self) -> None:
        self.counts = {"all": [0, 0], "confident": [0, 0]}  # [retained, total]
        self.counters["retention"] = self._figures()

    def on_frames(self, original: Packet, decoded: Packet) -> Packet:
        same = original.payload["label"] == decoded.payload["label"]
        groups = ("all", "confident") if original.payload.get("confident", True) else ("all",)
        for group in groups:
            self.counts[group][0] += same
            self.counts[group][1] += 1
        figures = self._figures()
        self.counters["retention"] = figures
        if self.print_every and figures["all"]["total"] % self.print_every == 0:
            print(self._line(figures), flush=True)
        flat = {f"{g}_{k}": v for g, values in figures.items() for k, v in values.items()}
        return Packet("label_retention", original.timestamp_ns, original.seq,
                      {**flat, "original": original.payload["label"],
                       "decoded": decoded.payload["label"], "same": same},
                      {"source": original.stream})

    def teardown(self) -> None:
        if hasattr(self, "counts"):
            print(self._line(self._figures()) + f" (final; unmatched {self.counters['frames']['unmatched']})",
                  flush=True)

    def _figures(self) -> dict:
        return {group: Retention.from_counts(*counts).as_dict()
                for group, counts in self.counts.items()}

    def _line(self, figures_by_group: dict) -> str:
        parts = []
        for group, figures in figures_by_group.items():
            if figures["total"]:
                parts.append(f"{group} {figures['retained']}/{figures['total']} = "
                             f"{figures['rate']:.1%} [{figures['ci_low']:.1%}, "
                             f"{figures['ci_high']:.1%}]")
            else:
                parts.append(f"{group} 0 frames")
        return f"[{self.name}] label retention: " + "; ".join(parts)
