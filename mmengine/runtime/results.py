"""What ``Engine.classify`` returns: a ``Prediction`` or an ``ErrorEntry`` per input, and their
JSON and text forms (``mmengine classify`` prints them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union


@dataclass(frozen=True)
class Prediction:
    """The classification of one input.

    Attributes:
        label: the best label.
        score: its probability (mean over windows).
        top_k: ``[(label, probability)]``, best first.
        windows: per window, the probability of every label (``Engine.labels`` order).
        path: the input file ("<array N>" for an array input).
        id: the manifest id (None otherwise).
    """

    label: str
    score: float
    top_k: List[Tuple[str, float]]
    windows: List[List[float]] = field(default_factory=list)
    path: Optional[str] = None
    id: Optional[str] = None

    ok = True

    def to_dict(self) -> dict:
        return {"path": self.path, "id": self.id, "label": self.label, "score": self.score,
                "top_k": [[k, s] for k, s in self.top_k], "windows": self.windows}


@dataclass(frozen=True)
class ErrorEntry:
    """An input that could not be classified: ``error`` says why, ``error_type`` names the
    exception class (e.g. ``AudioTruncatedError``)."""

    path: Optional[str]
    error: str
    error_type: str = "MMEngineError"
    id: Optional[str] = None

    ok = False

    def to_dict(self) -> dict:
        return {"path": self.path, "id": self.id, "error": self.error,
                "error_type": self.error_type}


Result = Union[Prediction, ErrorEntry]


def results_to_json(results) -> Union[dict, List[dict]]:
    """Plain-JSON form of ``classify`` output (one dict, or a list of dicts)."""
    if isinstance(results, (Prediction, ErrorEntry)):
        return results.to_dict()
    return [r.to_dict() for r in results]


def format_results(results) -> str:
    """Human-readable lines of ``classify`` output (what ``mmengine classify`` prints)::

        song.wav  reel 0.912  (jig 0.061, hornpipe 0.020)  [3 windows]
        bad.wav   ERROR AudioCorruptError: bad.wav: file is corrupt or not audio (...)
    """
    if isinstance(results, (Prediction, ErrorEntry)):
        results = [results]
    lines = []
    for r in results:
        name = r.id or r.path or "?"
        if isinstance(r, ErrorEntry):
            lines.append(f"{name}\tERROR {r.error_type}: {r.error}")
            continue
        rest = ", ".join(f"{k} {s:.3f}" for k, s in r.top_k[1:])
        line = f"{name}\t{r.label} {r.score:.3f}"
        if rest:
            line += f"  ({rest})"
        if len(r.windows) > 1:
            line += f"  [{len(r.windows)} windows]"
        lines.append(line)
    return "\n".join(lines)
