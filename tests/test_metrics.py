import numpy as np
import pytest

from lifelong.eval.metrics import bootstrap_cis, continual_metrics


def test_hand_computed_matrix():
    A = np.array([[90, np.nan, np.nan], [60, 85, np.nan], [50, 70, 80]])
    A = np.nan_to_num(A)
    m = continual_metrics(A)
    assert m["AA"] == pytest.approx(66.6667, abs=1e-3)
    assert m["AIA"] == pytest.approx(76.3889, abs=1e-3)
    assert m["BWT"] == pytest.approx(-27.5)
    assert m["FM"] == pytest.approx(27.5)
    assert m["FWT"] is None  # no baseline row given


def test_bwt_denominator_T_and_fwt():
    A = np.array([[90, 40, 30], [60, 85, 35], [50, 70, 80]], dtype=float)
    m = continual_metrics(A, baseline=np.array([20, 30, 40]), bwt_denominator="T")
    assert m["BWT"] == pytest.approx(-55 / 3)
    assert m["FM"] == pytest.approx(55 / 3)
    # FWT = mean(A[0,1]-b1, A[1,2]-b2) = mean(10, -5)
    assert m["FWT"] == pytest.approx(2.5)


def test_forgetting_uses_best_earlier_score_not_diagonal():
    A = np.array([[50, 0, 0], [70, 60, 0], [40, 60, 90]], dtype=float)
    m = continual_metrics(A)
    assert m["FM"] == pytest.approx(((70 - 40) + 0) / 2)
    assert m["BWT"] == pytest.approx(((40 - 50) + 0) / 2)


def test_lower_is_better_direction_is_signed_not_negated():
    # perplexity rising from 10 to 14 on task 0 is forgetting of 4, BWT -4; AA stays raw perplexity
    A = np.array([[10.0, 30.0], [14.0, 12.0]])
    m = continual_metrics(A, baseline=np.array([11.0, 20.0]), higher_is_better=[False, False])
    assert m["FM"] == pytest.approx(4.0)
    assert m["BWT"] == pytest.approx(-4.0)
    assert m["AA"] == pytest.approx(13.0)
    assert m["FWT"] == pytest.approx(-(30.0 - 20.0))


def test_bootstrap_ci_contains_point_estimate_and_narrows_with_data():
    rng = np.random.default_rng(0)
    acc = lambda s: 100 * s[..., 0].mean(-1)

    def make(n):
        # 2 tasks, rows: baseline, after stage 0, after stage 1
        p = [[0.5, 0.9, 0.6], [0.5, 0.5, 0.9]]
        return [(rng.random((3, n, 1)) < np.array(p[j])[:, None, None]).astype(float) for j in range(2)]

    for n, width_bound in ((40, None), (2000, 6.0)):
        stats = make(n)
        A = np.array([[acc(stats[j][r]) for j in range(2)] for r in (1, 2)])
        point = continual_metrics(A, np.array([acc(stats[j][0]) for j in range(2)]))
        ci = bootstrap_cis(stats, [acc, acc], [1, 2], [True, True], n_boot=300, seed=1)
        for m in ("AA", "BWT", "FM"):
            lo, hi = ci[m]
            assert lo <= point[m] <= hi
            if width_bound:
                assert hi - lo < width_bound


def test_score_ci_agrees_with_scipy_percentile_bootstrap():
    """One score's CI (the averaging sweep's points) against scipy's percentile bootstrap of the mean."""
    scipy_stats = pytest.importorskip("scipy.stats")
    from lifelong.eval.metrics import score_ci

    x = (np.random.default_rng(3).random(200) < 0.7).astype(float)
    ours = score_ci(x[:, None], lambda s: 100 * s[..., 0].mean(-1), n_boot=4000, seed=0)
    ref = scipy_stats.bootstrap((100 * x,), np.mean, method="percentile", n_resamples=4000, random_state=1)
    assert ours is not None and ours[0] <= 100 * x.mean() <= ours[1]
    assert ours == pytest.approx([ref.confidence_interval.low, ref.confidence_interval.high], abs=1.0)
    assert score_ci(x[:, None], np.mean, n_boot=0) is None
