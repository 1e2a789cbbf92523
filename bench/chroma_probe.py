"""How much do the audio's pitch classes tell the vocal mode? A fixed-rule and a logistic-regression
key classifier on each clip's mean chroma (librosa: chroma_stft at n_fft 2048 and 8192, chroma_cqt at
36 bins per octave from C2), trained on the train split, scored on validation and test. The
measurement behind FrontendConfig's chroma defaults (docs/results.md, "The pitch stream").
Run from this folder on a built vocal data set: cd bench && python chroma_probe.py
"""
import json, os, sys, numpy as np, soundfile as sf, librosa
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
root = str(Path(os.environ.get('MMENGINE_DATA_DIR', Path.home() / '.cache/mmengine/data')) / 'vocal') + '/'
rows = [json.loads(l) for l in open(root + 'manifest.jsonl')]
split = json.load(open(root + 'manifest.split.json'))['assignment']
KK_MAJ = np.array((6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88))
KK_MIN = np.array((6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17))
def feats(r):
    y, sr = sf.read(root + r['path'], dtype='float32')
    out = {}
    for nfft in (2048, 8192):
        c = librosa.feature.chroma_stft(y=y, sr=sr, n_fft=nfft, hop_length=512, tuning=0.0, norm=None)
        out[f'stft{nfft}'] = c.mean(1)
    cq = librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=512, fmin=librosa.note_to_hz('C2'), n_octaves=6, bins_per_octave=36, norm=None)
    out['cqt'] = cq.mean(1)
    return r['id'], out
def scores(p):
    p = (p - p.mean()) / (p.std() + 1e-9)
    s = []
    for t in (KK_MAJ, KK_MIN):
        t = (t - t.mean()) / t.std()
        s.append([np.dot(p, np.roll(t, k)) / 12 for k in range(12)])
    return np.array(s)  # (2, 12)
if __name__ == '__main__':
    with ProcessPoolExecutor(2) as ex:
        res = dict(ex.map(feats, rows, chunksize=8))
    from sklearn.linear_model import LogisticRegression
    y = {r['id']: r['label'] for r in rows}
    for name in ('stft2048', 'stft8192', 'cqt'):
        for part in ('val', 'test'):
            ids = [i for i in res if split[i] == part]
            rule = [('major' if scores(res[i][name])[0].max() > scores(res[i][name])[1].max() else 'minor') == y[i] for i in ids]
            tr = [i for i in res if split[i] == 'train']
            X = lambda ii: np.array([np.concatenate([scores(res[i][name]).max(1), np.sort(scores(res[i][name]).ravel())[-4:]]) for i in ii])
            clf = LogisticRegression(max_iter=1000).fit(X(tr), [y[i] for i in tr])
            acc = np.mean(clf.predict(X(ids)) == np.array([y[i] for i in ids]))
            print(f'{name:9s} {part}: KS rule acc {np.mean(rule):.3f}  logreg(max scores) acc {acc:.3f}  n={len(ids)}', flush=True)
