"""snncompile.compile on 2 gloo ranks, each half the calibration batches, gives one process's SNN over all of them."""
import torch

from distributed_workers import compile_worker, launch


def _equal(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_compile_on_two_ranks_equals_one_process(tmp_path):
    ranks = launch(compile_worker, tmp_path, timeout=120)
    for r, got in enumerate(ranks):
        for T in (8, 32):
            run = got[T]
            assert ("calibrate-bias" in run["pipeline"]) == (T == 8), run["pipeline"]
            differ = _equal(run["state"], run["ref_state"])
            assert not differ, f"rank {r}, T={T}: {differ} differ from one process over all batches"
            assert torch.equal(run["out"], run["ref_out"]), f"rank {r}, T={T}: outputs differ"
            assert not _equal(run["state"], ranks[0][T]["state"]), f"rank {r}, T={T}: ranks disagree"
        # without the collectives each rank's weights (thresholds folded in) and biases are its shard's
        assert _equal(got[32]["local_state"], got[32]["ref_state"]), f"rank {r}: its shard alone gave the same SNN"
