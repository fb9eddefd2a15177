"""An independent judge of generated 8x8 digits, built only from the real scikit-learn digits.

* a classifier (RBF SVM, ~99% held-out accuracy) trained on the real training digits:
  mean confidence of generated samples, share of confident samples, class coverage (entropy of the
  predicted-class histogram, 1.0 = all ten equally often), agreement with requested labels;
* nearest-neighbour L2 distance of each sample to the training set, as a ratio to the same
  distance for held-out real digits (about 1: as close as new real digits; much less than 1:
  copies of training digits; much more: off the data manifold);
* a Frechet distance between samples and held-out real digits in a 24-D PCA space of the
  training digits (FID computed on PCA features instead of Inception features), from 200
  samples; 200 real training digits score about 0.2 (the floor at that sample size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors

from ndunet.app.demo import digit_classifier


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Real digits scaled to [0, 1], (N, 8, 8), stratified 80/20 train/held-out split."""
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)
    return train_test_split(x, data.target, test_size=0.2, stratify=data.target, random_state=seed)


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * root))


@dataclass
class DigitsJudge:
    """Fit once on the real training digits; ``score(samples, labels)`` returns the metrics."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_heldout: np.ndarray
    y_heldout: np.ndarray

    def __post_init__(self) -> None:
        flat = self.x_train.reshape(len(self.x_train), -1)
        self.clf = digit_classifier(self.x_train, self.y_train, probability=True)
        self.heldout_accuracy = float(
            (
                self.clf.predict(self.x_heldout.reshape(len(self.x_heldout), -1)) == self.y_heldout
            ).mean()
        )
        self.nn = NearestNeighbors(n_neighbors=1).fit(flat)
        self.pca = PCA(n_components=24, random_state=0).fit(flat)
        self.heldout_nn = float(self._nn_dist(self.x_heldout).mean())

    def _nn_dist(self, x: np.ndarray) -> np.ndarray:
        return self.nn.kneighbors(x.reshape(len(x), -1))[0][:, 0]

    def score(
        self, samples: np.ndarray, labels: np.ndarray | None = None, fd_n: int = 200
    ) -> dict[str, float]:
        """Metrics of ``samples`` (N, 8, 8) in [0, 1] (clipped here). The Frechet distance uses the
        first ``fd_n`` samples only: its bias grows as 1/n, so rows compare at equal n."""
        x = np.clip(samples.reshape(len(samples), -1), 0.0, 1.0)
        prob = self.clf.predict_proba(x)
        pred = prob.argmax(1)
        hist = np.bincount(pred, minlength=10) / len(pred)
        nz = hist[hist > 0]
        nn_d = self._nn_dist(x)
        out = {
            "confidence": float(prob.max(1).mean()),
            "confident>0.9": float((prob.max(1) > 0.9).mean()),
            "classes": int((hist >= 0.02).sum()),
            "entropy": float(-(nz * np.log(nz)).sum() / np.log(10)),
            "nn_ratio": float(nn_d.mean() / self.heldout_nn),
            "fd_pca": _frechet(
                self.pca.transform(x[:fd_n]),
                self.pca.transform(self.x_heldout.reshape(len(self.x_heldout), -1)),
            ),
        }
        out["label_acc"] = float((pred == labels).mean()) if labels is not None else float("nan")
        return out


COLUMNS = ["confidence", "confident>0.9", "classes", "entropy", "label_acc", "nn_ratio", "fd_pca"]


def format_row(name: str, metrics: dict[str, float], extra: str = "") -> str:
    cells = []
    for c in COLUMNS:
        v = metrics[c]
        cells.append(f"{v:>6d}" if isinstance(v, int) else f"{v:6.3f}")
    return f"{name:<26}" + " ".join(f"{c:>13}" for c in cells) + (f"  {extra}" if extra else "")


def header() -> str:
    return f"{'samples':<26}" + " ".join(f"{c:>13}" for c in COLUMNS)


if __name__ == "__main__":
    xt, xh, yt, yh = digits_split()
    judge = DigitsJudge(xt, yt, xh, yh)
    print(f"classifier held-out accuracy: {judge.heldout_accuracy:.3f}")
    print(header())
    print(format_row("real held-out", judge.score(xh, yh)))
    rng = np.random.default_rng(0)
    print(format_row("uniform noise", judge.score(rng.random((360, 8, 8)))))
    print(format_row("train copies", judge.score(xt[:360], yt[:360])))
