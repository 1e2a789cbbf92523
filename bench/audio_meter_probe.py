"""How much of a folk tune's dance type can the audio's periodicities tell, without the notes?

A probe, no network: from the cached features of each clip (the engine's own front end),
  * the onset envelope (mean positive log-Mel flux over all bands) and its autocorrelation,
  * the chroma's self-similarity (cosine of each frame's linear chroma with the frame `lag` later),
each at lags of 4..192 frames (93 ms .. 4.5 s) resampled to a log-lag axis, where a change of
tempo is a shift ("onset ac", "chroma ss", "both"); and both read at 1..24 multiples of a note
period taken from the autocorrelation's highest peak at lags 4..12 ("tempo-normalised"). Then a
logistic regression and a random forest fitted on the training clips, scored (macro-F1) on
validation. "both" is the profile of the fusion model's AudioMeterHead
(mmengine.models.baselines.audio_meter_features), the others this script's own numpy. Also the same classifiers on the clip's mean log-Mel + MFCC
(what pooled audio statistics alone give), for scale.
Run: python bench/audio_meter_probe.py [TASK] (default folk)
"""
import sys
import numpy as np
from mmengine.api import load_features
from mmengine.models.baselines import audio_meter_features
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

LAG_MIN, LAG_MAX, BINS = 4, 192, 48
#: the note period is the autocorrelation's highest peak at lags 4..12 frames (93..279 ms)
PERIOD_LAGS = (4, 12)
GRID = 24  # note periods of the tempo-normalised profile


def log_lags():
    return np.exp(np.linspace(np.log(LAG_MIN), np.log(LAG_MAX), BINS))


def resample(curve):  # curve[l - 1] for l = 1..LAG_MAX -> BINS values at log-spaced lags
    return np.interp(log_lags(), np.arange(1, LAG_MAX + 1), curve)


def periodicities(logmel, chroma):
    d = np.maximum(np.diff(logmel, axis=1), 0).mean(0)  # (T-1,) onset envelope
    e = d - d.mean()
    den = float(e @ e) + 1e-9
    ac = np.array([e[:-l] @ e[l:] / den for l in range(1, LAG_MAX + 1)])
    out = [resample(ac)]
    lo, hi = PERIOD_LAGS
    p = lo + int(np.argmax(ac[lo - 1:hi]))
    # parabolic refinement of the peak, then the curves at multiples of the note period
    if lo < p < hi:
        a, b, c = ac[p - 2], ac[p - 1], ac[p]
        p = p + 0.5 * (a - c) / (a - 2 * b + c + 1e-12)
    grid = p * np.arange(1, GRID + 1)
    grid = grid[grid <= LAG_MAX]
    norm = np.zeros(2 * GRID)
    norm[:len(grid)] = np.interp(grid, np.arange(1, LAG_MAX + 1), ac)
    if chroma is not None:
        c = 10.0 ** ((chroma - chroma.max(0, keepdims=True)) / 10.0)
        c = c / (np.linalg.norm(c, axis=0, keepdims=True) + 1e-9)
        ss = np.array([np.mean(np.sum(c[:, :-l] * c[:, l:], axis=0)) for l in range(1, LAG_MAX + 1)])
        ss = (ss - ss.mean()) / (ss.std() + 1e-9)
        out.append(resample(ss))
        norm[GRID:GRID + len(grid)] = np.interp(grid, np.arange(1, LAG_MAX + 1), ss)
    out.append(norm)
    return np.concatenate(out)


def main(task):
    fs, _ = load_features(task, progress=False)
    parts = {p: fs.subset(p) for p in ("train", "val")}
    feats = {}
    for p, s in parts.items():
        ch = getattr(s, "chroma", None)
        X = np.stack([periodicities(np.asarray(s.logmel[i], np.float64),
                                    None if ch is None else np.asarray(ch[i], np.float64))
                      for i in range(len(s.labels))])
        pooled = np.concatenate([np.asarray(s.logmel).mean(2), np.asarray(s.mfcc).mean(2),
                                 np.asarray(s.mfcc).std(2)], axis=1)
        model = audio_meter_features(np.asarray(s.logmel), None if ch is None else np.asarray(ch))
        feats[p] = {"onset ac": X[:, :BINS], "chroma ss": X[:, BINS:2 * BINS],
                    "both": model, "tempo-normalised": X[:, 2 * BINS:],
                    "all periodicities": X, "pooled log-Mel+MFCC": pooled,
                    "all + pooled": np.concatenate([X, pooled], 1)}
    ytr, yva = np.asarray(parts["train"].labels), np.asarray(parts["val"].labels)
    for name in feats["train"]:
        if feats["train"][name].shape[1] == 0:
            continue
        for cname, clf in (("logreg", make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.3))),
                           ("rf", RandomForestClassifier(500, random_state=0, n_jobs=2))):
            clf.fit(feats["train"][name], ytr)
            f1 = f1_score(yva, clf.predict(feats["val"][name]), average="macro")
            print(f"{task} val  {name:22s} {cname:6s} macro-F1 {f1:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "folk")
