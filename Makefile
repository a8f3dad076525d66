# The set-up commands of the README. Each creates or reuses the environment (tools/env.sh) itself.
.PHONY: demo demo-coco test bench env
SHELL := /bin/bash

env:
	@source tools/env.sh && echo "environment: $$WSEG_ENV"

# The demo's timings in the README were taken with one intra-op thread per process (data loading and CRF run in
# separate worker processes on the 2 cores); override with OMP_NUM_THREADS=2 make demo.
demo:
	@source tools/env.sh && OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $$WSEG_PY scripts/run_pipeline.py \
		--config scripts/pipelines/demo.py --work_dir runs/demo $(ARGS)

# The COCO demo: synthetic COCO json -> coco14/make_coco_masks.py -> every stage on the 81-class root (docs/coco.md).
demo-coco:
	@source tools/env.sh && OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $$WSEG_PY scripts/run_pipeline.py \
		--config scripts/pipelines/demo_coco.py --work_dir runs/demo_coco $(ARGS)

test:
	@source tools/env.sh && $$WSEG_PY -m pytest -q $(ARGS)

bench:
	@source tools/env.sh && $$WSEG_PY benchmarks/run_all.py $(ARGS)
