"""DDP of a to_trainable SNN on 2 gloo ranks, half a batch each: the gradients of one process on the whole batch."""
import torch

from distributed_workers import ddp_worker, launch


def _close(a: dict, b: dict, atol: float = 1e-6) -> list[str]:
    assert a.keys() == b.keys() and a
    return [k for k in a if not torch.allclose(a[k], b[k], rtol=1e-5, atol=atol)]


def test_ddp_step_equals_one_process_on_the_whole_batch(tmp_path):
    ranks = launch(ddp_worker, tmp_path)
    for r, got in enumerate(ranks):
        for case in ("plain", "sync_bn"):
            for s, step in enumerate(got[case]["steps"]):
                bad = _close(step["grads"], step["ref_grads"])
                assert not bad, f"rank {r}, {case}, step {s}: gradients differ in {bad}"
            # SGD steps and running statistics: the same as one process (batch norm's through the union's batch)
            assert not _close(got[case]["state"], got[case]["ref_state"], atol=1e-5), (r, case)
            assert not _close(got[case]["state"], ranks[0][case]["state"], atol=0), f"rank {r}, {case}: ranks differ"
        # batch norm left per rank takes each half's statistics: not the whole batch's gradients
        assert _close(got["local_bn"]["steps"][0]["grads"], got["local_bn"]["steps"][0]["ref_grads"])
    assert any("running_mean" in k for k in ranks[0]["sync_bn"]["state"])
