"""What the clean stage decided: per rule the rows it flagged and their scores, the map, the timings."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from marsseg.clean.embedding import Embedding
from marsseg.clean.rules import RuleResult



@dataclass
class CleanReport:
    index: np.ndarray  # (n,) ingested row of each input row
    results: dict[str, RuleResult]  # per enabled rule, in clean.rules order
    embedding: Embedding  # the training rows, then the test references
    timings: dict[str, float] = field(default_factory=dict)
    references: int = 0  # test images measured beside the training rows (find.reference_images)

    @property
    def removed(self) -> np.ndarray:
        """(n,) bool: caught by at least one rule."""
        caught = np.zeros(len(self.index), bool)
        for result in self.results.values():
            caught |= result.flagged
        return caught

    def rules_of(self, row: int) -> list[str]:
        return [rule for rule, result in self.results.items() if result.flagged[row]]

    def table(self) -> pd.DataFrame:
        """``index,rule,score``: one line per (removed row, rule that caught it), by index then rule."""
        parts = [pd.DataFrame({"index": self.index[r.flagged], "rule": rule, "score": r.scores[r.flagged],
                               "order": position})
                 for position, (rule, r) in enumerate(self.results.items())]
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            {"index": [], "rule": [], "score": [], "order": []})
        table = table.sort_values(["index", "order"], kind="stable").drop(columns="order")
        return table.astype({"index": np.int64, "score": float}).reset_index(drop=True)

    def map_table(self) -> pd.DataFrame:
        """``x,y,outlier,rule`` for every input row: ``rule`` joins the catching rules with '+', or 'kept'."""
        labels = ["+".join(self.rules_of(row)) or "kept" for row in range(len(self.index))]
        xy = self.embedding.xy[:len(self.index)]
        return pd.DataFrame({"x": xy[:, 0].round(4), "y": xy[:, 1].round(4),
                             "outlier": self.removed.astype(int), "rule": labels})

    def metrics(self) -> dict[str, float | int]:
        removed = int(self.removed.sum())
        metrics: dict[str, float | int] = {"rows_in": len(self.index)}
        metrics.update({f"removed_{rule}": int(r.flagged.sum()) for rule, r in self.results.items()})
        metrics.update({"removed_total": removed, "rows_out": len(self.index) - removed,
                        "test_references": self.references})
        if "embedding" in self.results:
            metrics["test_references_flagged"] = self.results["embedding"].references_flagged
        if self.embedding.perplexity is not None:
            metrics["perplexity_used"] = round(self.embedding.perplexity, 3)
        metrics.update({f"seconds_{step}": round(seconds, 3) for step, seconds in self.timings.items()})
        return metrics

