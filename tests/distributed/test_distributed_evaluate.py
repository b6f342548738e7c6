"""evaluate() on 2 gloo ranks counts every sample once: the accuracy per T of one process, exactly."""
from distributed_workers import evaluate_worker, launch


def test_sharded_accuracy_equals_one_process_with_padding(tmp_path):
    ranks = launch(evaluate_worker, tmp_path)
    ref = ranks[0]["ref"]
    # 23 samples on 2 ranks: DistributedSampler pads rank 1 with a repeat of sample 0, which must not count
    assert sorted(ref) == [1, 2, 3, 5, 8, 16] and len(set(ref.values())) > 1, ref
    assert all(round(a * 23) == a * 23 or abs(a * 23 - round(a * 23)) < 1e-9 for a in ref.values())
    for r, got in enumerate(ranks):
        assert got["ref"] == ref
        assert got["dist"] == ref, f"rank {r}: {got['dist']} vs one process {ref}"
        assert got["one"] == got["ref_one"], f"rank {r}: one sample on two ranks {got['one']} vs {got['ref_one']}"
