"""all_reduce_stats on 2 gloo ranks equals one process over the union of their data, bit for bit."""
import torch

from distributed_workers import head_worker, launch, stats_batches, stats_summary, stats_worker
from snncompile.stats import ActivationStats


def _same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"{what}: {k} differs"
        else:
            assert a[k] == b[k], f"{what}: {k} differs ({a[k]} vs {b[k]})"


def test_two_ranks_equal_one_process_over_the_union(tmp_path):
    ranks = launch(stats_worker, tmp_path)
    union = {k: ActivationStats(bins=64) for k in "abcd"}
    for rank in (0, 1):
        for k, batches in stats_batches(rank).items():
            for x in batches:
                union[k].update(x)
    want = {k: stats_summary(st) for k, st in union.items()}
    assert want["c"] == {"empty": True, "count": 0}
    # the data makes the test able to fail: ranks saw different maxima (a: 0.3 vs 7.3, so rank 0's histogram is
    # coarsened), rank 1 saw nothing of b, rank 0 only zeros of d; no rank alone holds the union's statistics
    assert ranks[0]["before"]["a"]["range"] < ranks[1]["before"]["a"]["range"]
    assert ranks[1]["before"]["b"]["empty"] and ranks[0]["before"]["d"]["range"] == 1.0
    for r, got in enumerate(ranks):
        for k in "ad":
            assert not torch.equal(got["before"][k]["hist"], want[k]["hist"]), f"rank {r} alone had the union's {k}"
        for k in "abd":
            _same(got["after"][k], want[k], f"rank {r}, layer {k}")
        assert got["after"]["c"] == {"empty": True, "count": 0}
        assert "channels" in got["refused"], f"rank {r} did not refuse different channel counts: {got['refused']!r}"


def test_calibration_head_gives_every_rank_the_same_first_rows(tmp_path):
    """calibrate-bias reads calibration_head(data): under 2 ranks, rank 0's rows then rank 1's, on both."""
    ranks = launch(head_worker, tmp_path)
    rows = [1000 * r + torch.arange(5 + 3 * r, dtype=torch.float32) for r in (0, 1)]
    for r, got in enumerate(ranks):
        assert got["type"] == "GatheredHead"
        assert [b.shape[0] for b in got["all"]] == [4, 1, 4, 4], f"rank {r}: batches as each rank's reader splits them"
        assert torch.equal(torch.cat(got["all"])[:, 0], torch.cat(rows)), f"rank {r}"
        assert torch.equal(torch.cat(got["cut"])[:, 0], torch.cat([rows[0][:3], rows[1][:3]])), f"rank {r}"
        x1, x2 = (torch.cat([b[k] for b in got["pair"]]) for k in (0, 1))
        assert torch.equal(x1[:, 0], torch.cat(rows)) and torch.equal(x2, -x1), f"rank {r}: two inputs"
        assert torch.equal(got["first"][:, 0], rows[0][:2])
