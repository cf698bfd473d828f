"""Two-process DistributedDataParallel (gloo, meeting through a file in the test's tmp_path)
trains a converted model — one of each peer block, float64 — for a few SGD steps: every step's
gradients and the final parameters equal those of one process training on the whole batch."""
import torch
import torch.multiprocessing

from conftest import TOLERANCES
from fixtures import ddp_worker
from fixtures.model_runs import interpreter_friendly  # noqa: F401

WORLD_SIZE = 2


def test_ddp_matches_single_process(tmp_path, interpreter_friendly):
    torch.multiprocessing.spawn(
        ddp_worker.ddp_rank, args=(WORLD_SIZE, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD_SIZE, join=True
    )
    ddp = torch.load(tmp_path / "ddp.pt")

    model = ddp_worker.converted_model()
    x, y = ddp_worker.data()
    history = ddp_worker.train(model, list(model.parameters()), x, y)

    atol, rtol = TOLERANCES[torch.float64]
    for step, (ddp_grads, grads) in enumerate(zip(ddp["grads"], history, strict=True)):
        for ddp_grad, grad in zip(ddp_grads, grads, strict=True):
            torch.testing.assert_close(ddp_grad, grad, atol=atol, rtol=rtol, msg=lambda m, s=step: f"step {s}: {m}")
    for ddp_param, param in zip(ddp["params"], model.parameters(), strict=True):
        torch.testing.assert_close(ddp_param, param.detach(), atol=atol, rtol=rtol)
