"""`python -m mfzoo [overrides]` is `mfzoo-train [overrides]`: the form launchers that run a
module take, e.g. `torchrun --nproc-per-node 2 -m mfzoo trainer=ddp ...`."""

from mfzoo.cli import train

if __name__ == "__main__":
    train()
