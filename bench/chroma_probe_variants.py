"""The chroma variants of FrontendConfig (power 1 or 2, octave weighting), each scored as in
chroma_probe.py on the vocal validation split (n_fft 8192). Run: cd bench && python chroma_probe_variants.py
"""
import json, numpy as np, soundfile as sf, librosa
from concurrent.futures import ProcessPoolExecutor
from chroma_probe import rows, split, scores, root
V = {'p2_w2': dict(power=2, octwidth=2), 'p1_w2': dict(power=1, octwidth=2), 'p1_none': dict(power=1, octwidth=None),
     'p2_none': dict(power=2, octwidth=None), 'p1_c4w1.5': dict(power=1, ctroct=4.0, octwidth=1.5), 'p1_c4.5w2': dict(power=1, ctroct=4.5, octwidth=2)}
def feats(r):
    y, sr = sf.read(root + r['path'], dtype='float32')
    S = np.abs(librosa.stft(y, n_fft=8192, hop_length=512, center=True, pad_mode='constant'))
    out = {}
    for k, v in V.items():
        v = dict(v); p = v.pop('power')
        fb = librosa.filters.chroma(sr=sr, n_fft=8192, tuning=0.0, **v)
        out[k] = (fb @ S**p).mean(1)
    return r['id'], out
if __name__ == '__main__':
    from sklearn.linear_model import LogisticRegression
    with ProcessPoolExecutor(2) as ex:
        res = dict(ex.map(feats, rows, chunksize=8))
    y = {r['id']: r['label'] for r in rows}
    tr = [i for i in res if split[i] == 'train']
    for name in V:
        X = lambda ii: np.array([np.concatenate([scores(res[i][name]).max(1), np.sort(scores(res[i][name]).ravel())[-4:]]) for i in ii])
        clf = LogisticRegression(max_iter=1000).fit(X(tr), [y[i] for i in tr])
        ids = [i for i in res if split[i] == 'val']
        rule = np.mean([('major' if scores(res[i][name])[0].max() > scores(res[i][name])[1].max() else 'minor') == y[i] for i in ids])
        print(f'{name:10s} val: rule {rule:.3f} logreg {np.mean(clf.predict(X(ids)) == np.array([y[i] for i in ids])):.3f}', flush=True)
