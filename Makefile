# The two set-up commands of the README. Each creates or reuses the environment (tools/env.sh) itself.
.PHONY: demo test bench env
SHELL := /bin/bash

env:
	@source tools/env.sh && echo "environment: $$WSEG_ENV"

demo:
	@source tools/env.sh && $$WSEG_PY scripts/run_demo.py $(ARGS)

test:
	@source tools/env.sh && $$WSEG_PY -m pytest -q $(ARGS)

bench:
	@source tools/env.sh && $$WSEG_PY benchmarks/run_all.py $(ARGS)
