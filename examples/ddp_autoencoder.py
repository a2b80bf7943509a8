"""A DDP autoencoder with a global-batch latent regularizer (latentdiv, group=).

Each rank trains on its own shard of a synthetic data set; the reconstruction loss is the usual
per-rank mean (DDP averages its gradients), the latent regularizer (CWAE's log Cramer-Wold
distance to N(0, I), or the gaussian MMD^2 to N(0, I)) is computed on the *global* batch, the
concatenation of every rank's codes, and its gradients after DDP's averaging are exactly those of
the single-process regularizer on that batch (docs/distributed.md).

    torchrun --nproc_per_node=2 --master_addr=127.0.0.1 --master_port=29500 examples/ddp_autoencoder.py --steps 200
    torchrun --nproc_per_node=2 --master_addr=127.0.0.1 --master_port=29500 examples/ddp_autoencoder.py --regularizer mmd

(``--standalone`` works too where the host name resolves; on this machine it did not.)

CPU and gloo by default; ``--backend nccl`` on GPUs (one per rank; not run by our tests: no GPU here).
With ``--check``, each step also recomputes the regularizer on the gathered batch in one process
(rank 0) and asserts that the global value is the same on every rank.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn

import latentdiv
from latentdiv.distributed import WORLD


def make_data(n: int, dim: int, seed: int) -> torch.Tensor:  # -> [n, dim]
    """Points near a 2-D curved manifold embedded in `dim` dimensions (the same on every rank)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 2, generator=g) * 4.0 - 2.0
    basis = torch.randn(4, dim, generator=g)
    feats = torch.cat([t, torch.sin(2.0 * t)], dim=1)  # [n, 4]
    return feats @ basis + 0.05 * torch.randn(n, dim, generator=g)


class AutoEncoder(nn.Module):
    def __init__(self, dim: int, latent: int, hidden: int = 64) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor):  # [n, dim] -> ([n, dim], [n, latent])
        z = self.encoder(x)
        return self.decoder(z), z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128, help="local batch size per rank")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--latent", type=int, default=4)
    parser.add_argument("--regularizer", choices=("cwae", "mmd"), default="cwae")
    parser.add_argument("--weight", type=float, default=1.0, help="weight of the regularizer")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backend", default="gloo")
    parser.add_argument("--check", action="store_true", help="verify the global value against one process")
    args = parser.parse_args()

    dist.init_process_group(args.backend)  # env:// (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, ...)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.backend == "nccl" else torch.device("cpu")
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = nn.parallel.DistributedDataParallel(AutoEncoder(args.dim, args.latent).to(device))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    regularizer = (latentdiv.losses.CramerWoldLoss(log=True, group=WORLD) if args.regularizer == "cwae"
                   else latentdiv.losses.MMDToNormalLoss(group=WORLD))

    data = make_data(4096, args.dim, seed=1).to(device)
    shard = data[rank::world]  # this rank's part of the data set
    gen = torch.Generator().manual_seed(100 + rank)
    for step in range(args.steps):
        idx = torch.randint(0, shard.shape[0], (args.batch,), generator=gen).to(device)
        x = shard[idx]
        recon, z = model(x)
        rec = ((recon - x) ** 2).sum(dim=1).mean()  # local mean: DDP averages it over the ranks
        reg = regularizer(z)  # the global-batch value, the same on every rank
        loss = rec + args.weight * reg
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.check:
            values = [torch.zeros(()) for _ in range(world)]
            dist.all_gather(values, reg.detach().cpu())
            codes = [torch.zeros_like(z) for _ in range(world)]
            dist.all_gather(codes, z.detach())
            single = (latentdiv.losses.CramerWoldLoss(log=True) if args.regularizer == "cwae"
                      else latentdiv.losses.MMDToNormalLoss())(torch.cat(codes)).item()
            assert all(v.item() == values[0].item() for v in values), values
            # float32: the sharded sums add in another order than the single-process ones
            assert abs(single - reg.item()) <= 1e-5 * max(1.0, abs(single)), (single, reg.item())
        if rank == 0 and (step % max(1, args.steps // 10) == 0 or step == args.steps - 1):
            print(f"step {step:5d}  reconstruction {rec.item():9.4f}  {args.regularizer} (global batch of "
                  f"{world * args.batch}) {reg.item():9.4f}", flush=True)
    dist.barrier()  # every rank past its last collective before the group goes (else a rank can wait at exit)
    dist.destroy_process_group()
    print(f"rank {rank} finished", flush=True)


if __name__ == "__main__":
    main()
