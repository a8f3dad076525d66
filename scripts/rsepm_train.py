"""Train RecurSeed + EdgePredictMix (the training its authors never released; see docs/rsepm.md): the single-stage
trainer (wseg/stages/wsss_train.py) with ``--network rsepm``, so every wsss_train flag and every RS+EPM flag
(``--network rsepm --help`` lists them: ``--rs``, ``--mix {epm,certainmix,none}``, ...) works here too.
Multi-GPU: torchrun --nproc_per_node N scripts/rsepm_train.py ..."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import wsss_train as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--network" or a.startswith("--network=") for a in argv):
        sys.argv[1:] = ["--network", "rsepm"] + argv
    sys.exit(main(build_parser, run))
